"""Scoring throughput of ``lepton_nn.distributed.score``: one process vs a 2-worker Dask
``LocalCluster`` (processes, 1 thread each) on a generated Parquet dataset.

The dataset: rows drawn with replacement from the bundled credit data (13 raw columns, 5 of
them categorical) plus an ``id`` key column, split into 8 Parquet files; the model: the
tabular network ``lepton-nn train`` makes (32x16), trained briefly. Each run scores every
file into Parquet parts in batches of 65,536 rows (bounded memory).

    python benchmarks/bench_distributed.py [--rows 1000000]   # a Markdown table, rows/s
    python -m pytest benchmarks/bench_distributed.py -q        # a small smoke run

Honest note: on a machine with 2 shared vCPUs, 2 workers can beat 1 process by at most 2x,
and any busy neighbour takes a share of that; read the ratio, not the absolute rate.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
distributed = pytest.importorskip("distributed")

from lepton_nn import io  # noqa: E402
from lepton_nn.data import read_csv  # noqa: E402
from lepton_nn.datasets import path as data_path  # noqa: E402
from lepton_nn.distributed import score  # noqa: E402
from lepton_nn.tabular import TabularModel  # noqa: E402

FILES = 8


def make_dataset(root: str, rows: int, seed: int = 0) -> tuple[str, str]:
    """``(model path, folder of Parquet files)`` for ``rows`` generated rows."""
    table = read_csv(str(data_path("credit_data.csv")), target="Status")
    model = TabularModel(hidden=(32, 16), epochs=3, seed=seed, verbose=0)
    model.fit(table)
    model_path = os.path.join(root, "credit.lnn")
    io.save(model, model_path)
    folder = os.path.join(root, "parquet")
    os.makedirs(folder, exist_ok=True)
    gen = np.random.default_rng(seed)
    for k, part in enumerate(np.array_split(np.arange(rows), FILES)):
        pick = gen.integers(0, table.n_rows, len(part))
        cols = {"id": pa.array(part)}
        for name, values in table.data.items():
            v = values[pick]
            cols[name] = pa.array(v.tolist() if v.dtype == object else v)
        pq.write_table(pa.table(cols), os.path.join(folder, f"part-{k:02d}.parquet"))
    return model_path, folder


def run(model_path: str, folder: str, out: str, client=None) -> dict:
    return score(model_path, folder, out, client=client, key_columns=["id"])


def cluster():
    c = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    return c, distributed.Client(c)


def test_score_one_process_vs_two_workers(benchmark, tmp_path):
    model_path, folder = make_dataset(str(tmp_path), 20_000)
    c, client = cluster()
    try:
        one = run(model_path, folder, str(tmp_path / "one"))
        two = benchmark.pedantic(
            run, args=(model_path, folder, str(tmp_path / "two"), client), rounds=1
        )
    finally:
        client.close()
        c.close()
    assert one["rows"] == two["rows"] == 20_000
    benchmark.extra_info["rows_per_s_1_process"] = one["rows"] / one["seconds"]
    benchmark.extra_info["rows_per_s_2_workers"] = two["rows"] / two["seconds"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=2, help="best of N per engine")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        model_path, folder = make_dataset(root, a.rows)
        print(f"generated {a.rows:,} rows in {FILES} files ({time.perf_counter() - t0:.1f} s)")
        c, client = cluster()
        try:
            rates, cpu = {}, {}
            for name, cl in (("1 process", None), ("2 Dask workers", client)):
                runs = [
                    run(model_path, folder, os.path.join(root, f"o{i}"), cl)
                    for i in range(a.rounds)
                ]
                best = min(runs, key=lambda s: s["seconds"])
                rates[name] = a.rows / best["seconds"]
                cpu[name] = a.rows / sum(p["cpu_seconds"] for p in best["parts"])
        finally:
            client.close()
            c.close()
    # rows per CPU-second: the work itself; rows/s also depends on the cores we were given
    print("\n| engine | rows/s | vs 1 process | rows per CPU-second |\n|---|---:|---:|---:|")
    for name, r in rates.items():
        print(f"| {name} | {r:,.0f} | {r / rates['1 process']:.2f}x | {cpu[name]:,.0f} |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nload average during the run: {load:.1f}")
    print(f"\n{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; machine shared and loaded")


if __name__ == "__main__":
    main()
