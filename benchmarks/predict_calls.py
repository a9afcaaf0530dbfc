"""N batch-1 calls of the 784-512-256-10 MLP (float32 or int8 file), for counting instructions
with callgrind (load-proof) or timing CPU per call: ``predict`` through the runtime, or its
plan's compiled call alone (``chain``). One call's cost is the difference of two runs over the
difference of their N::

    for n in 1000 3000; do PYTHONPATH=. valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python benchmarks/predict_calls.py predict $n 1 fp32 2>&1 | grep Collected; done

Arguments: ``predict|chain N [threads] [fp32|int8] [--cpu]``. ``--cpu`` prints the calling
thread's CPU time per call (median of 15 interleaved rounds of predict, chain and
``general``: predict on a second copy of the model with its one-call runner switched off,
runtime/onecall.py, i.e. the general path of gate, plan call and copy): predict's overhead
is its difference to chain. Run it in another checkout, with its own PYTHONPATH, for an A/B.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import numpy as np


def main(argv: list[str]) -> None:
    cpu = "--cpu" in argv
    argv = [a for a in argv if a != "--cpu"]
    what, n = argv[0], int(argv[1])
    threads = int(argv[2]) if len(argv) > 2 else 1
    kind = argv[3] if len(argv) > 3 else "fp32"
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_runtime as br

    import lepton_nn.runtime as rt

    with tempfile.TemporaryDirectory() as tmp:
        path = br._files(br.make_weights(), tmp)[kind]
        model = rt.load(path, threads=threads)
        general = rt.load(path, threads=threads) if cpu else None
    if general is not None and hasattr(general, "_fast"):  # the general path alone
        general._fast = general._fast_predict = None
    x = np.random.default_rng(1).standard_normal((1, br.SIZES[0])).astype(np.float32)
    plan = model.plan_for(1)
    calls = {
        "predict": lambda: model.predict(x),
        "chain": lambda: [fn(x, *args) for fn, args, _ in plan.head],
    }
    if general is not None:
        calls["general"] = lambda: general.predict(x)
    if not cpu:
        call = calls[what]
        call()
        for _ in range(n):
            call()
        return
    times: dict[str, list[float]] = {k: [] for k in calls}
    for r in range(15):
        for k in list(calls) if r % 2 == 0 else list(calls)[::-1]:
            f = calls[k]
            t0 = time.thread_time()
            for _ in range(n):
                f()
            times[k].append((time.thread_time() - t0) / n * 1e6)
    for k, v in times.items():
        print(f"{k:8s} {statistics.median(v):7.2f} us CPU/call  (min {min(v):.2f})")


if __name__ == "__main__":
    main(sys.argv[1:])
