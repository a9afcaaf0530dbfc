"""lepton_nn.distributed on a real Dask LocalCluster (2 worker processes, 1 thread each, on
loopback, started here): searches equal serial runs, the data goes once per worker, BLAS
threads follow the cores, the CLI runs on the cluster, partition scoring equals in-process
predictions."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from test_tuning import build, data, without_times  # noqa: E402

from lepton_nn.cli import main  # noqa: E402
from lepton_nn.datasets import path as data_path  # noqa: E402
from lepton_nn.distributed import DaskExecutor, dask_executor  # noqa: E402
from lepton_nn.distributed.executors import _threads_for  # noqa: E402
from lepton_nn.tuning import GridSearch, RandomSearch, cross_validate, loguniform  # noqa: E402

CREDIT = str(data_path("credit_data.csv"))


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


class Recording(DaskExecutor):
    """Records what the search ships: the handles it shares, the task arguments."""

    def __init__(self, client):
        super().__init__(client)
        self.shared, self.args = 0, []

    def share(self, obj):
        self.shared += 1
        return super().share(obj)

    def submit(self, fn, /, *args):
        self.args.append(args)
        return super().submit(fn, *args)


def rows(results):
    return [{k: v for k, v in r.items() if k != "fit_time"} for r in results]


def test_grid_search_on_dask_equals_serial_and_ships_the_data_once(client):
    X, y = data(160)
    grid = {"lr": [0.01, 0.05], "hidden": [4, 8], "epochs": [3]}
    serial = GridSearch(build, grid, cv=2, executor="serial", refit=False)
    serial.fit(X, y)
    ex = Recording(client)
    on_dask = GridSearch(build, grid, cv=2, executor=ex, refit=False)
    on_dask.fit(X, y)
    assert rows(on_dask.results_) == rows(serial.results_)  # to the last bit
    assert on_dask.best_params_ == serial.best_params_
    # one share for 8 tasks; each task carries the handle (a future), not the arrays
    assert ex.shared == 1 and len(ex.args) == 8
    handles = {a[3].key for a in ex.args}
    assert len(handles) == 1 and all(isinstance(a[3], distributed.Future) for a in ex.args)
    assert not any(isinstance(v, np.ndarray) and v.size == X.size for a in ex.args for v in a)
    # the BLAS threads of each worker: this host's cores over the 2 task slots
    assert ex.threads_by_worker() == {w: _threads_for(2) for w in ex._slots}


def test_the_handle_lives_on_every_worker_while_the_search_holds_it(client):
    """Broadcast puts a copy on each worker (Dask's active memory manager, paused here, would
    soon drop the copies no task waits for: see the lost-data tests)."""
    ex = DaskExecutor(client)
    X, y = data(50)
    client.amm.stop()
    try:
        handle = ex.share((X, y))
        assert len(client.who_has([handle])[handle.key]) == 2  # broadcast: both workers
    finally:
        client.amm.start()
    got = ex.submit(lambda d: float(d[0].sum()), handle).result()
    assert got == float(X.sum())


def test_cross_validate_and_random_search_equal_serial(client):
    X, y = data(160)
    kw = {"params": {"lr": 0.03, "epochs": 3}, "cv": 3}
    a = cross_validate(build, X, y, executor="serial", **kw)
    b = cross_validate(build, X, y, executor=DaskExecutor(client), **kw)
    assert without_times(a) == without_times(b) and a["mean"] == b["mean"]
    space = {"lr": loguniform(1e-3, 1e-1), "hidden": [4, 8], "epochs": [2]}
    r1 = RandomSearch(build, space, n_trials=3, cv=2, seed=5, executor="serial", refit=False)
    r2 = RandomSearch(build, space, n_trials=3, cv=2, seed=5, executor=DaskExecutor(client))
    assert rows(r1.fit(X, y)) == rows(r2.fit(X, y))
    assert r2.best_model_ is not None  # refit here, after the cluster's trials


def test_the_plain_client_executor_works_too(client):
    """``client.get_executor()`` (no share hook): the data then ships with every task."""
    X, y = data(120)
    kw = {"params": {"lr": 0.03, "epochs": 2}, "cv": 2}
    a = cross_validate(build, X, y, executor="serial", **kw)
    b = cross_validate(build, X, y, executor=client.get_executor(), **kw)
    assert without_times(a) == without_times(b)


def test_dask_executor_refuses_a_bad_local_spec():
    from lepton_nn.errors import LeptonError

    with pytest.raises(LeptonError, match="local:N"):
        dask_executor("local:zero")


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory):
    lines = open(CREDIT, encoding="utf-8").read().splitlines()
    p = tmp_path_factory.mktemp("dist") / "small.csv"
    p.write_text("\n".join(lines[:301]) + "\n", encoding="utf-8")
    return str(p)


def test_cli_tune_on_the_cluster_prints_each_trial_and_equals_serial(client, small_csv, capsys):
    argv = ["tune", small_csv, "--target", "Status", "--cv", "2", "--grid", "lr=1e-3,1e-2;hidden=8"]
    assert main([*argv, "--jobs", "1"]) == 0
    serial = capsys.readouterr().out
    assert main([*argv, "--dask", client.scheduler.address]) == 0
    on_dask = capsys.readouterr().out
    assert "on Dask tcp://127.0.0.1:" in on_dask
    assert sum(line.startswith("trial ") for line in on_dask.splitlines()) == 2

    def table(text):  # the ranked table and the best line, without times
        keep = [ln for ln in text.splitlines() if ln[:4].strip().isdigit() or "best:" in ln]
        return [ln.rsplit(None, 1)[0] if ln[:4].strip().isdigit() else ln for ln in keep]

    assert table(on_dask) == table(serial) and table(serial)


# -- scoring -------------------------------------------------------------------------------

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def scored(tmp_path_factory, small_csv):
    """A model trained on the small slice, and the credit data as 3 Parquet files and a CSV
    with an id column."""
    import pandas as pd

    root = tmp_path_factory.mktemp("score")
    model = str(root / "m.lnn")
    argv = ["train", small_csv, "--target", "Status", "--hidden", "8", "--epochs", "3"]
    assert main([*argv, "-o", model, "--quiet"]) == 0
    df = pd.read_csv(CREDIT).drop(columns="Status")
    df.insert(0, "id", [f"a{i}" for i in range(len(df))])
    folder = root / "parts"
    folder.mkdir()
    for k, part in enumerate(np.array_split(np.arange(len(df)), 3)):
        df.iloc[part].to_parquet(folder / f"in-{k}.parquet", row_group_size=500)
    df.to_csv(root / "all.csv", index=False)
    return model, str(folder), str(root / "all.csv"), df


def expected(model_path, df):
    from lepton_nn.runtime import load

    m = load(model_path)
    return m.predict(df), m.predict_proba(df)


def test_score_on_the_cluster_equals_in_process_predictions(client, scored, tmp_path):
    import pandas as pd

    from lepton_nn.distributed import score

    model, folder, _, df = scored
    seen = []
    summary = score(
        model,
        folder,
        tmp_path / "out",
        client=client,
        key_columns=["id"],
        batch_rows=700,
        progress=lambda done, total, part: seen.append((done, total)),
    )
    assert summary["files"] == 3 and summary["rows"] == len(df)
    assert seen[-1] == (3, 3)
    got = pd.concat(pd.read_parquet(p["out"]) for p in summary["parts"])
    labels, proba = expected(model, df)
    assert got["id"].tolist() == df["id"].tolist()  # input order, keys kept
    assert got["prediction"].tolist() == labels.tolist()
    np.testing.assert_allclose(got.filter(like="p_").to_numpy(), proba, rtol=1e-6)


def test_score_here_reads_csv_in_batches_and_equals_the_parquet_run(scored, tmp_path):
    import pandas as pd

    from lepton_nn.distributed import score

    model, _, csv_path, df = scored
    s = score(model, csv_path, tmp_path / "o", key_columns=["id"], batch_rows=1000, format="csv")
    got = pd.read_csv(s["parts"][0]["out"])
    labels, _ = expected(model, df)
    assert got["prediction"].tolist() == labels.tolist() and len(got) == len(df)


def test_a_bad_value_names_the_file_row_and_column(scored, tmp_path):
    from lepton_nn.distributed import score
    from lepton_nn.errors import DataError

    model, _, csv_path, _ = scored
    lines = open(csv_path).read().splitlines()
    fields = lines[7].split(",")
    fields[1] = "many"  # Seniority (after the id) on line 8 of the file
    lines[7] = ",".join(fields)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"bad\.csv: row 8, column 'Seniority'"):
        score(model, bad, tmp_path / "o", batch_rows=5, format="csv")
    assert not list((tmp_path / "o").iterdir())  # nothing half-written left behind


def test_map_partitions_of_a_dask_dataframe_with_the_scorer(client, scored):
    import dask.dataframe as dd

    from lepton_nn.distributed.scoring import scorer

    model, folder, _, df = scored
    fn = scorer(model, ["id"])
    ddf = dd.read_parquet(folder)
    got = ddf.map_partitions(fn, meta=fn(df.head(2))).compute()
    labels, _ = expected(model, df)
    assert got["prediction"].tolist() == labels.tolist()
    assert len(__import__("pickle").dumps(fn)) < 2 * len(fn.blob) + 1000  # bytes, not code


def test_chunked_reading_keeps_memory_flat_as_the_file_grows(tmp_path):
    """Peak traced memory while reading a CSV in batches of 500 rows: the same for a file
    4x larger (the reader holds one batch, not the file). Measured in a fresh process: this
    module's Dask client allocates on its own threads, which tracemalloc would count too."""
    import os
    import subprocess
    import sys

    import lepton_nn

    here = os.path.dirname(os.path.dirname(lepton_nn.__file__))
    row = "1.5,2,abc,4.25\n"
    probe = (
        "import sys, tracemalloc\n"
        "from lepton_nn.distributed import iter_batches\n"
        "tracemalloc.start()\n"
        "rows = sum(b.n_rows for b in iter_batches(sys.argv[1], batch_rows=500))\n"
        "print(rows, tracemalloc.get_traced_memory()[1])\n"
    )

    def peak(n_rows):
        p = tmp_path / f"f{n_rows}.csv"
        p.write_text("a,b,c,d\n" + row * n_rows)
        env = {**os.environ, "PYTHONPATH": here}  # the very package this test imported
        out = subprocess.run(
            [sys.executable, "-c", probe, str(p)],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
            env=env,
        ).stdout.split()
        assert int(out[0]) == n_rows
        return int(out[1])

    small, large = peak(20_000), peak(80_000)
    whole = len(row) * 80_000  # the large file's size in bytes (1.2 MB; ~20x that as rows)
    assert large < 1.5 * small and large < whole, (small, large, whole)


def test_cli_predict_scores_parquet_files_on_the_cluster(client, scored, tmp_path, capsys):
    import glob

    import pandas as pd

    model, folder, _, df = scored
    files = sorted(glob.glob(f"{folder}/*.parquet"))
    out = tmp_path / "out"
    argv = ["predict", model, *files, "-o", str(out), "--key", "id"]
    assert main([*argv, "--dask", client.scheduler.address, "--batch-rows", "600"]) == 0
    text = capsys.readouterr()
    assert f"scored {len(df):,} rows of 3 file(s)" in text.out
    assert text.err.count("file ") == 3  # a progress line per finished file
    got = pd.concat(pd.read_parquet(p) for p in sorted(out.iterdir()))
    assert got["prediction"].tolist() == expected(model, df)[0].tolist()
    assert got["id"].tolist() == df["id"].tolist()
    assert main(["predict", model, folder]) == 2  # a folder needs -o


class OneCopy(DaskExecutor):
    """Shares as a loaded cluster leaves them: the active memory manager has dropped the
    broadcast copies no task waits for yet, so one worker (``holder``) holds the data."""

    holder = None

    def share(self, obj):
        handle = super().share(obj)
        deadline = time.monotonic() + 60
        while len(holders := self.client.who_has([handle])[handle.key]) > 1:
            assert time.monotonic() < deadline, "the copies were never reduced"
            self.client.amm.run_once()
            time.sleep(0.05)
        self.holder = holders[0]
        return handle


def _kill(client, address, pids):
    """SIGKILL the worker at ``address``; return once the scheduler has removed it."""
    os.kill(pids[address], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while address in client.scheduler_info(n_workers=-1)["workers"]:
        assert time.monotonic() < deadline, "the scheduler never noticed the death"
        time.sleep(0.05)


def test_shared_data_whose_only_holder_died_is_sent_again(client):
    """Scattered data has no task to recompute it: Dask forgets it with its last holder and
    cancels what reads it ("already forgotten"); the executor scatters it again."""
    client.wait_for_workers(2, timeout=120)  # the nanny restarts killed workers
    ex = OneCopy(client)
    X, y = data(50)
    handle = ex.share((X, y))
    _kill(client, ex.holder, client.run(os.getpid))
    got = ex.submit(lambda d: float(d[0].sum()), handle).result(timeout=120)
    assert got == float(X.sum())
    assert handle.status == "cancelled"  # the first copy really was lost


def test_a_worker_killed_mid_search_still_gives_the_serial_results(client):
    """The worker holding the only copy of the shared data is SIGKILLed while it runs a
    trial: Dask re-runs the lost tasks, the executor sends the data again if no other worker
    had fetched it yet. (Last in this file: the nanny restarts the killed worker behind it.)"""
    client.wait_for_workers(2, timeout=120)
    X, y = data(160)
    grid = {"lr": [0.01, 0.02, 0.05], "hidden": [4, 8], "epochs": [4]}
    serial = GridSearch(build, grid, cv=2, executor="serial", refit=False)
    serial.fit(X, y)
    ex = OneCopy(client)
    search = GridSearch(build, grid, cv=2, executor=ex, refit=False)
    pids = client.run(os.getpid)
    errors = []
    run = threading.Thread(target=lambda: _catch(errors, search.fit, X, y))
    run.start()
    deadline = time.monotonic() + 120
    while ex.holder is None or not client.processing([ex.holder])[ex.holder]:
        assert run.is_alive() and time.monotonic() < deadline, ("no trial ran", errors)
        time.sleep(0.02)
    _kill(client, ex.holder, pids)
    run.join(timeout=300)
    assert not run.is_alive() and not errors, errors
    assert rows(search.results_) == rows(serial.results_)
    assert pids[ex.holder] not in client.run(os.getpid).values()  # it really died


def _catch(errors, fn, *args):
    try:
        fn(*args)
    except Exception as e:  # reported by the test's assertion
        errors.append(e)


def test_labels_from_distinct_values_equal_the_runtime_labels():
    from lepton_nn.distributed.sources import _labels
    from lepton_nn.runtime.preprocess import to_categorical

    na = frozenset({"", "NA", "?"})
    text = np.array([" a", "b ", "NA", None, "a", "", "?", "c", "b"], dtype=object)
    mixed = np.array(["a", 1.0, None, 2, "NA"], dtype=object)  # falls back to the plain way
    for v in (text, mixed, np.array([None, None], dtype=object)):
        assert _labels(v, na).tolist() == to_categorical(v, na).tolist()


def test_runtime_predict_frame_keeps_keys_and_index(scored):
    from lepton_nn.runtime import load

    model_path, _, _, df = scored
    m = load(model_path)
    part = df.iloc[100:160]
    got = m.predict_frame(part, ["id"])
    assert type(got) is type(part) and got.index.equals(part.index)
    assert list(got.columns) == ["id", "prediction", *[f"p_{c}" for c in m.classes.tolist()]]
    assert got["prediction"].tolist() == m.predict(part).tolist()
    np.testing.assert_array_equal(got.filter(like="p_").to_numpy(), m.predict_proba(part))
