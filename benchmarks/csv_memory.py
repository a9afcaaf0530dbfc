"""Peak memory of ``read_csv`` as a multiple of the file's size (tracemalloc), and its time.

    python benchmarks/csv_memory.py [ROWS]      # from the repository root (default 100000)

Writes two files to a temporary folder: ten float columns and a 0/1 label (~97 bytes a row),
and a mixed table (a float, an int, a float of two decimals, two label columns, a 0/1 label;
~31 bytes a row). The test ``tests/test_data_csv.py`` bounds the peak on a smaller file.
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lepton_nn.data import read_csv  # noqa: E402


def write(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 10))
    num, mixed = folder / "floats.csv", folder / "mixed.csv"
    with open(num, "w") as f:
        f.write(",".join(f"f{j}" for j in range(10)) + ",label\n")
        for i in range(n):
            f.write(",".join(f"{v:.6f}" for v in x[i]) + f",{i % 2}\n")
    colors = ("red", "green", "blue", "amber")
    with open(mixed, "w") as f:
        f.write("a,b,c,color,city,y\n")
        for i in range(n):
            row = f"{x[i, 0]:.4f},{int(x[i, 1] * 100)},{x[i, 2]:.2f},{colors[i % 4]}"
            f.write(f"{row},city{i % 50},{i % 2}\n")
    return [num, mixed]


def main(n: int = 100_000) -> None:
    with tempfile.TemporaryDirectory() as d:
        for path in write(Path(d), n):
            size = os.path.getsize(path)
            gc.collect()
            tracemalloc.start()
            read_csv(path)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            times = []
            for _ in range(3):
                t = time.perf_counter()
                read_csv(path)
                times.append(time.perf_counter() - t)
            print(
                f"{path.name:11s} {size / 1e6:6.2f} MB  peak {peak / size:5.1f} x the file  "
                f"median {sorted(times)[1]:.3f} s (load {os.getloadavg()[0]:.1f})"
            )


if __name__ == "__main__":
    main(*map(int, sys.argv[1:2]))
