"""W4 (LSTM training step) A/B: two lepton_nn source trees, each in its own worker process,
timed in interleaved rounds; medians of wall time and of process CPU time per step.

    PYTHONPATH=. python benchmarks/bench_w4_ab.py --old ../main --new . --threads 1,2

CPU time (all threads of the worker) is the load-proof figure on a shared machine: a
neighbour that takes the core stretches the wall time, not the CPU time the step needs.
It includes the kernel's time for page faults, also counted per step (``faults``): fresh
multi-megabyte arrays each step once cost W4 842 faults and a third of its CPU time.
Each round: the old worker runs ``--steps`` steps, then the new one (order alternates).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

WORKER = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
threads = int(sys.argv[2])
from threadpoolctl import threadpool_limits
from lepton_nn.backend.threads import set_num_threads
set_num_threads(threads)
_limits = threadpool_limits(limits=threads)
from lepton_nn import losses, optim
from lepton_nn.bench.engines.lepton import lepton_net
from lepton_nn.bench.workloads import ADAM, W4, net_data, net_weights
x, y = net_data(W4)
model = lepton_net(W4, net_weights(W4))
opt = optim.Adam(model.parameters(), lr=ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"])
def step(k):
    opt.zero_grad()
    loss = losses.cross_entropy(model(x[k % len(x)]), y[k % len(y)])
    loss.backward()
    opt.step()
for k in range(10):
    step(k)
print("ready", flush=True)
k = 0
for line in sys.stdin:
    n = int(line)
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        step(k)
        k += 1
    t1, c1 = time.perf_counter(), time.process_time()
    f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    print(json.dumps([(t1 - t0) / n, (c1 - c0) / n, (f1 - f0) / n]), flush=True)
"""


def _worker(tree: str, threads: int) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    p = subprocess.Popen(
        [sys.executable, "-c", WORKER, os.path.abspath(tree), str(threads)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert p.stdout.readline().strip() == "ready"
    return p


def _round(p: subprocess.Popen, steps: int) -> tuple[float, float, float]:
    p.stdin.write(f"{steps}\n")
    p.stdin.flush()
    return tuple(json.loads(p.stdout.readline()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="the old tree (holding lepton_nn/)")
    ap.add_argument("--new", default=".", help="the new tree")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    for n in (int(t) for t in a.threads.split(",")):
        workers = {"old": _worker(a.old, n), "new": _worker(a.new, n)}
        got = {"old": [], "new": []}
        for r in range(a.rounds):
            for name in ("old", "new") if r % 2 == 0 else ("new", "old"):
                got[name].append(_round(workers[name], a.steps))
        for p in workers.values():
            p.stdin.close()
            p.wait()
        med = {k: [statistics.median(x[i] for x in v) for i in (0, 1, 2)] for k, v in got.items()}
        print(
            f"threads={n}: old wall {1e3 * med['old'][0]:.2f} ms, cpu {1e3 * med['old'][1]:.2f} ms"
            f" | new wall {1e3 * med['new'][0]:.2f} ms, cpu {1e3 * med['new'][1]:.2f} ms"
            f" | old/new wall {med['old'][0] / med['new'][0]:.2f}x,"
            f" cpu {med['old'][1] / med['new'][1]:.2f}x | faults/step old {med['old'][2]:.0f},"
            f" new {med['new'][2]:.0f}  (medians of {a.rounds} rounds)"
        )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
