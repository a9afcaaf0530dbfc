"""The native pool's idle spin (``LEPTON_POOL_SPIN_US``) against the cost it hides: our
runtime at batch 64 on 2 threads, each round of ``--budget`` seconds of back-to-back calls
started after ``--settle`` seconds of idle (the cores halt: on a virtual machine a halted
vCPU comes back late and slow), for each spin in ``--spins`` in turn (interleaved rounds,
medians); the 1-thread time as the yardstick; how often a worker went to sleep during a
round (each time, its core may halt); and the CPU the process burns in the 0.1 s
after a round (the workers' spin before they sleep).

    PYTHONPATH=. python benchmarks/bench_pool_spin.py [--cases lstm,cnn,mlp] [--rounds 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="lstm,cnn,mlp")
    ap.add_argument("--spins", default="0,100,1000,5000,20000", help="microseconds")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--budget", type=float, default=0.02)
    ap.add_argument("--settle", type=float, default=0.3)
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_vs_ort as B

    import lepton_nn as L
    import lepton_nn.runtime as rt
    from lepton_nn.backend.threads import _the_blas
    from lepton_nn.kernels import _pool

    blas = _the_blas()
    if blas.set is not None:
        blas.set(1)
    spins = [float(s) for s in args.spins.split(",")]
    print(f"load average before: {os.getloadavg()}", flush=True)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases.split(","):
            build = {"mlp": B._mlp, "cnn": B._cnn}.get(name) or (
                lambda r, c=name.upper(): B._rnn(c, r)
            )
            model, _, shape = build(rng)
            path = os.path.join(tmp, f"{name}.lnn")
            L.save(model, path)
            x = rng.standard_normal((args.batch, *shape)).astype(np.float32)
            one, two = rt.load(path, threads=1), rt.load(path, threads=2)
            one.forward(x), two.forward(x)
            times: dict = {s: [] for s in [*spins, "1t"]}
            burn: dict = {s: [] for s in spins}
            sleeps: dict = {s: [] for s in spins}
            for _ in range(args.rounds):
                for s in [*spins, "1t"]:
                    if s != "1t":
                        _pool.set_spin_us(s)
                    m = one if s == "1t" else two
                    time.sleep(args.settle)
                    slept, t0, k = _pool.stats()["sleeps"], time.perf_counter(), 0
                    while time.perf_counter() - t0 < args.budget or k < 3:
                        m.forward(x)
                        k += 1
                    times[s].append((time.perf_counter() - t0) / k)
                    if s != "1t":  # times a worker went to sleep during the round
                        sleeps[s].append(_pool.stats()["sleeps"] - slept)
                    if s != "1t":  # the CPU the idle workers burn in the next 0.1 s
                        c0 = time.process_time()
                        time.sleep(0.1)
                        burn[s].append(time.process_time() - c0)
            one_t = statistics.median(times["1t"])
            print(f"{name} batch {args.batch}: 1 thread {one_t * 1e6:.0f} us", flush=True)
            for s in spins:
                med, idle = statistics.median(times[s]), statistics.median(burn[s])
                print(
                    f"  spin {s:7.0f} us: 2 threads {med * 1e6:7.0f} us  1t/2t "
                    f"{one_t / med:4.2f}  worker sleeps a round {statistics.mean(sleeps[s]):4.1f}"
                    f"  CPU burnt idle after a round {idle * 1e3:.1f} ms",
                    flush=True,
                )
    _pool.set_spin_us(_pool.DEFAULT_SPIN_US)
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
