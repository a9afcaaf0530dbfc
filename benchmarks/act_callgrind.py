"""Instructions per element of the fused AVX2 activations (kernels/csrc/simd_act.h), counted
by callgrind: a load-proof A/B signal for a change to that header.

benchmarks/act_loop.c runs la_bias_act_row256 (y = act(y + bias)) over 4096 floats ``reps``
times; it is built with setup.py's flags against ``--csrc`` (default: this tree's
kernels/csrc) and counted under ``valgrind --tool=callgrind`` with 0 and with ``reps`` passes:
the difference over reps * 4096 is the cost per element (start-up cancels out; the harness's
own refill of y is in it too, the same in every build).

    python benchmarks/act_callgrind.py                              # this tree
    git show REV:kernels/csrc/simd_act.h > /tmp/old/simd_act.h
    python benchmarks/act_callgrind.py --csrc /tmp/old              # another version

Needs gcc and valgrind on x86-64. Prints one line per activation.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ACTS = {"identity": 0, "relu": 1, "sigmoid": 2, "tanh": 3, "gelu": 4}
N = 4096


def _count(exe: Path, act: int, reps: int, tmp: Path) -> int:
    out = tmp / f"cg.{act}.{reps}"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(exe), str(act),
           str(reps)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    m = re.search(r"Collected : (\d+)", res.stderr)
    if m is None:
        raise RuntimeError(res.stderr[-2000:])
    return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csrc", default=str(HERE.parent / "kernels" / "csrc"))
    ap.add_argument("--acts", default="relu,sigmoid,tanh,gelu")
    ap.add_argument("--reps", type=int, default=200)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        exe = tmp / "act_loop"
        flags = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-std=c11"]  # setup.py's
        subprocess.run(["gcc", *flags, "-I", a.csrc, "-o", str(exe), str(HERE / "act_loop.c"),
                        "-lm"], check=True)  # fmt: skip
        print(f"simd_act.h from {a.csrc}: {N} floats x {a.reps} passes")
        for name in a.acts.split(","):
            act = ACTS[name]
            per = (_count(exe, act, a.reps, tmp) - _count(exe, act, 0, tmp)) / (a.reps * N)
            print(f"{name:8s} {per:7.3f} instructions / element")


if __name__ == "__main__":
    main()
