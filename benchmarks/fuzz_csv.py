"""Longer CSV fuzz run (not a test): the generator and checks of ``tests/test_fuzz_csv.py``.

    python benchmarks/fuzz_csv.py --cases 2000 [--cli-every 10] [--seed 0]

Every case is a (possibly broken) CSV file sent through read_csv, TabularModel (fit, save,
load, predict) and, every ``--cli-every`` cases, the CLI's ``train`` and ``predict``. Allowed
outcomes: a result or a one-line DataError (exit 2 on the command line). Prints the cases
tried and the count of each outcome; a disallowed outcome prints its file and traceback and
the run exits 1.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings


def _fuzz_module():
    path = Path(__file__).resolve().parents[1] / "tests" / "test_fuzz_csv.py"
    spec = importlib.util.spec_from_file_location("fuzz_csv_cases", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _kind(msg: str) -> str:
    return re.sub(r"\S*case\.csv|'[^']*'|\d+", "_", msg)[:90]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=1000)
    p.add_argument("--cli-every", type=int, default=10, dest="cli_every")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top", type=int, default=15, help="refusal kinds listed")
    args = p.parse_args(argv)
    fz = _fuzz_module()
    counts: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()  # messages, numbers and names blanked
    failures: list[tuple[bytes, str]] = []
    t0 = time.perf_counter()

    @settings(
        max_examples=args.cases,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],
    )
    @given(files=fz.csv_files())
    def run(files: tuple[bytes, bytes]) -> None:
        n = sum(counts.values())
        with tempfile.TemporaryDirectory() as d:
            try:
                outcome, msg = fz.check_library(*files, Path(d))
                counts["library " + outcome] += 1
                kinds[_kind(msg)] += bool(msg)
                if args.cli_every and n % args.cli_every == 0:
                    outcome, msg = fz.check_cli(*files, Path(d))
                    counts["cli " + outcome] += 1
                    kinds["cli " + _kind(msg)] += bool(msg)
            except Exception:  # a disallowed outcome: keep it, go on
                counts["FAILED"] += 1
                failures.append((files[0], traceback.format_exc(limit=4)))

    seed(args.seed)(run)()  # the seed pins the examples for a rerun
    tried = counts.total() - sum(v for k, v in counts.items() if k.startswith("cli "))
    print(f"{tried} CSV cases in {time.perf_counter() - t0:.0f} s")
    for key, value in sorted(counts.items()):
        print(f"  {key:<28} {value}")
    print("most frequent refusals (paths, quoted values and numbers blanked):")
    for key, value in kinds.most_common(args.top):
        print(f"  {value:>5}  {key}")
    for data, tb in failures[:10]:
        print(f"\n--- disallowed outcome for {data[:200]!r}\n{tb}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
