"""The int8 chain's two speed groups per process at 2 threads (issue 23): is it where the
weights land in physical memory? Many fresh processes of ``benchmarks/qchain_harness.c``
(the int8 784-512-256-10 chain at batch 1, outside Python), interleaved, with the weights on
4 KiB pages and on 2 MiB pages (``QV_HUGE=1``: one 2 MiB-aligned region advised
``MADV_HUGEPAGE``; the harness prints the region's AnonHugePages), each process once:

- ``chain``: the whole chain at 2 threads on the pool, per-call wall time (median, p5);
- ``share``: one thread running half of W alone (~270 KB), thread CPU time: whether that
  share stays in one core's L2 in this process; ``share cpu0`` / ``share cpu1``: the same
  pinned to each vCPU (the host may slow one vCPU for a while: every part of the work, the
  L1-resident quantization too, not only what reads W from L2);
- the L2 set load of each share from /proc/self/pagemap (root only: frame numbers): the most
  lines of a share in one L2 set (8 ways) and the lines in sets over 8 ("over");

and before each round ``benchmarks/vcpu_probe.c``: the cache-line round trip between the
two vCPUs and FMA throughput alone / both busy (are the vCPUs on one host core, one CCX?).

    PYTHONPATH=. python benchmarks/bench_qchain_groups.py [--rounds 10] [--calls 3000]
        [--old DIR]

``--old DIR``: also the chain built from another checkout's ``kernels/csrc`` (e.g. main
before the chain's barrier protocol changed), run in the same rounds: an old/new A/B.

Needs gcc and x86-64 Linux. A slow group caused by placement would show as processes whose
``share`` time is high on 4 KiB pages and none on 2 MiB pages; one caused by the host, as
the same split on both, following ``share cpu0`` / ``share cpu1`` in time.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-std=gnu11"]


def build(tmp: str, root: str, name: str) -> str:
    """The harness built against ``root``'s kernels/csrc as the extension is (the pool: its
    own translation unit)."""
    src = os.path.join(HERE, "qchain_harness.c")
    inc = "-I" + os.path.join(root, "kernels", "csrc")
    obj, exe = os.path.join(tmp, name + ".o"), os.path.join(tmp, name)
    subprocess.run(["gcc", *FLAGS, inc, "-DPOOL_PART", "-c", src, "-o", obj], check=True)
    subprocess.run(["gcc", *FLAGS, inc, src, obj, "-o", exe, "-lpthread", "-lm"], check=True)
    return exe


def run(exe: str, huge: int, share: bool, calls: int, cpu: int | None = None) -> dict:
    """One fresh harness process (on CPU ``cpu`` when given): its figures as a dict."""
    env = dict(os.environ, QV_HUGE=str(huge), QV_SHARE=str(int(share)))
    if cpu is not None:
        env["QV_CPU"] = str(cpu)
    out = subprocess.run(
        [exe, str(calls), "2", "2"], env=env, capture_output=True, text=True
    ).stdout
    r: dict = {"huge_kb": None, "worst": [], "over": []}
    for line in out.splitlines():
        if m := re.match(r"arena AnonHugePages:\s+(\d+)", line):
            r["huge_kb"] = int(m[1])
        elif m := re.match(r"share \d: \d+ lines, at most (\d+) per L2 set, (\d+) in sets", line):
            r["worst"].append(int(m[1]))
            r["over"].append(int(m[2]))
        elif m := re.search(r"median ([\d.]+) us, p5 ([\d.]+)", line):
            r["median"], r["p5"] = float(m[1]), float(m[2])
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--old", help="another checkout: its chain too, in the same rounds")
    a = ap.parse_args()
    rows: dict[tuple[str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(tmp, ROOT, "qchain")
        old = build(tmp, a.old, "qchain_old") if a.old else None
        probe = os.path.join(tmp, "probe")
        src = os.path.join(HERE, "vcpu_probe.c")
        subprocess.run(["gcc", "-O2", "-mavx2", "-mfma", src, "-o", probe, "-lpthread"], check=True)
        print(f"load before: {os.getloadavg()}")
        for i in range(a.rounds):
            line = subprocess.run([probe], capture_output=True, text=True).stdout.strip()
            cells = [f"round {i + 1}: {line}"]
            cases = [(exe, what, huge) for huge in (0, 1) for what in ("chain", "share")]
            cases += [(exe, f"share cpu{c}", 0) for c in (0, 1)]
            cases += [(old, "old chain", 0)] if old else []
            for x, what, huge in cases if i % 2 == 0 else cases[::-1]:
                cpu = int(what[-1]) if what.startswith("share cpu") else None
                r = run(x, huge, what.startswith("share"), a.calls, cpu)
                rows.setdefault((what, huge), []).append(r)
                page = "2M" if huge else "4K"
                cells.append(
                    f"{what} {page} {r.get('median', 0):.2f}/{r.get('p5', 0):.2f}"
                    f" (sets max {max(r['worst'], default=-1)}, over {sum(r['over'])}"
                    + (f", AnonHuge {r['huge_kb']} kB)" if huge else ")")
                )
            print(" | ".join(cells), flush=True)
        print(f"load after: {os.getloadavg()}")
    print("\nper-process medians (us), sorted; median over processes [p5s]")
    for (what, huge), rs in sorted(rows.items()):
        med = sorted(r["median"] for r in rs if "median" in r)
        p5 = sorted(r["p5"] for r in rs if "p5" in r)
        print(
            f"{what} {'2 MiB' if huge else '4 KiB'}: {' '.join(f'{v:.2f}' for v in med)}; "
            f"median {statistics.median(med):.2f} [{' '.join(f'{v:.2f}' for v in p5)}]"
        )


if __name__ == "__main__":
    main()
