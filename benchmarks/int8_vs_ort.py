"""Issue 23's int8 targets, in one process, interleaved rounds: our fused int8 GEMM against
ONNX Runtime's MatMulInteger on W6 ((M, 1024) x (1024, 1024), M in 1, 64, 256, 1024; 1 and 2
threads), and the quantized 784-512-256-10 MLP at batch 1 through our runtime against ONNX
Runtime's dynamic int8 quantization of the same weights.

    python benchmarks/int8_vs_ort.py [--rounds 21] [--ms 1,64,256,1024] [--threads 1,2]
    python benchmarks/int8_vs_ort.py --int8 [--rounds 15] [--block 100] [--procs 3]
        # the MLP at batch 1 only: per-call median / p5 / p95 / min, engines interleaved in
        # blocks of --block calls; --procs N: N fresh processes, each one's figures

W6: ours is ``qlinear`` (the uint8 x int8 GEMM with the dequantize + bias + ReLU epilogue
fused; what a quantized Dense runs), ONNX Runtime's the one-node MatMulInteger graph of
``lepton_nn.bench`` in the exact form this CPU allows (u8s8 when its results are exact, else
u8u8: MLAS's AVX2 u8s8 kernel saturates int16 pair sums). Each round times every engine on a
batch of calls (~0.1 s of work); printed: medians and minimums (the minimum is the least
disturbed figure on a loaded machine), ours over theirs (< 1: we are faster), GOP/s, and the
load average before and after.

The host's state (``lepton_nn.bench.hoststate``: each CPU's speed on a fixed compiled loop,
slowest / fastest, and the cross-CPU cache-line round trip) is read before and after every
W6 row (its "host" column: before -> after) and around the int8 MLP's table, and marked
UNEVEN when the CPUs ran unevenly or the round trip was in its slow mode: 2-thread figures
measured then carry it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

SETTLE = 0.3  # s of idle before each engine's round at > 1 thread (--settle)


def _timed(
    fns: dict, rounds: int, reps: int, settle: float = 0.0, clock=time.perf_counter
) -> dict[str, np.ndarray]:
    """Interleaved rounds; with ``settle`` each engine's round starts after that pause, so no
    engine is timed while the other's idle pool workers still spin on the cores (ONNX
    Runtime's for ~0.1 s after a run, ours for up to 5 ms): a server runs one engine.
    ``clock``: ``time.thread_time`` times the calling thread's CPU time (1 thread only: both
    engines then run on the caller), steadier than wall time under other processes' load."""
    ts = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            if settle:
                time.sleep(settle)
            f()
            t = clock()
            for _ in range(reps):
                f()
            ts[k].append((clock() - t) / reps)
    return {k: np.array(v) for k, v in ts.items()}


def w6(ms, threads, rounds, settle=SETTLE, cpu=False, ceiling=0.0):
    """W6 table; ``cpu``: thread CPU time (1 thread only); ``ceiling``: the step ceiling in
    multiply-adds per ns on one core (benchmarks/qgemm_parts.c prints it): each engine's
    GMAC/s over it per thread is printed too."""
    import lepton_nn.kernels._qgemm as q

    from lepton_nn.bench.engines.onnx_runtime import onnx_matmulinteger_bytes, ort_session
    from lepton_nn.bench.hoststate import brief, probe
    from lepton_nn.bench.workloads import matmul_data

    w_q = matmul_data(1)["w_q"]
    wp, cs = q.pack_weights(w_q)
    print(f"\nW6 int8 GEMM, isa {q.isa()}: ours = qlinear, ORT = MatMulInteger")
    print(
        "| M | threads | ours median (us) | ORT median (us) | ours/ORT median | ours/ORT min "
        "| ours GOP/s | ORT GOP/s | ours / ceiling | ORT / ceiling | host: slowest CPU, "
        "round trip |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for m in ms:
        d = matmul_data(m)
        feed = {"A": d["x_q"]}
        want = (d["x_q"][:4].astype(np.int64) - 128) @ w_q.T.astype(np.int64)
        for t in threads:
            for unsigned_b in (False, True):  # the exact form on this CPU
                sess = ort_session(onnx_matmulinteger_bytes(w_q, unsigned_b=unsigned_b), t)
                if np.array_equal(sess.run(None, {"A": d["x_q"][:4]})[0], want):
                    break
            out = np.empty((m, w_q.shape[0]), np.float32)
            args = (d["x_q"], np.float32(0.02), 128, wp, d["w_scale"], cs, d["bias"], 1, out)
            fns = {
                "ours": lambda a=args, t=t: q.qlinear(*a, nthreads=t),
                "ort": lambda s=sess, f=feed: s.run(None, f),
            }
            reps = max(1, int(1e8 // (m * 1024 * 1024)))
            clock = time.thread_time if cpu and t == 1 else time.perf_counter
            host0 = probe()
            ts = _timed(fns, rounds, reps, settle if t > 1 else 0.0, clock)
            host1 = probe()
            med = {k: float(np.median(v)) for k, v in ts.items()}
            mn = {k: float(v.min()) for k, v in ts.items()}
            ops = 2 * m * 1024 * 1024
            print(
                f"| {m} | {t} | {med['ours'] * 1e6:.1f} | {med['ort'] * 1e6:.1f} "
                f"| {med['ours'] / med['ort']:.2f} | {mn['ours'] / mn['ort']:.2f} "
                f"| {ops / med['ours'] / 1e9:.1f} | {ops / med['ort'] / 1e9:.1f} "
                + "".join(
                    f"| {ops / 2 / med[k] / 1e9 / (ceiling * t):.2f} " if ceiling else "| - "
                    for k in ("ours", "ort")
                )
                + f"| {brief(host0, t)} -> {brief(host1, t)} |"
            )
            sys.stdout.flush()


def _per_call(fns: dict, rounds: int, block: int, settle: float) -> dict[str, np.ndarray]:
    """Per-call times (s): each round, each engine in turn (the first one rotating) runs 10
    untimed calls, then ``block`` calls each timed alone; ``settle`` s of idle before each
    engine's turn (0: none). In a block an engine's calls follow its own, as in a server that
    runs one engine: the other engine's idle threads (ONNX Runtime's spin after a run, ours
    up to 5 ms) have stopped or are its own."""
    ts = {k: [] for k in fns}
    names = list(fns)
    clock = time.perf_counter_ns
    for r in range(rounds):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            f = fns[k]
            if settle:
                time.sleep(settle)
            for _ in range(10):
                f()
            out = ts[k]
            for _ in range(block):
                t0 = clock()
                f()
                out.append(clock() - t0)
    return {k: np.array(v, np.float64) * 1e-9 for k, v in ts.items()}


def _mlp_engines(tmp, threads):
    """The engines of the int8 MLP at batch 1 (see mlp_batch1) and our plan's steps."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_runtime as br
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import lepton_nn.runtime as rt
    from lepton_nn.bench.engines.onnx_runtime import onnx_mlp_bytes, ort_session

    weights = br.make_weights()
    x = np.random.default_rng(1).standard_normal((1, br.SIZES[0])).astype(np.float32)
    fns = {}
    paths = br._files(weights, tmp)
    fp32, q8 = os.path.join(tmp, "mlp.onnx"), os.path.join(tmp, "mlp_int8.onnx")
    with open(fp32, "wb") as fh:
        fh.write(onnx_mlp_bytes(weights))
    quantize_dynamic(fp32, q8, weight_type=QuantType.QInt8)
    for t in threads:
        model = rt.load(paths["int8"], threads=t)
        model.predict(x)
        fns[f"lepton runtime int8 predict, {t} thread(s)"] = lambda m=model: m.predict(x)
        fns[f"lepton plan.run (the compiled call(s) alone), {t} thread(s)"] = (
            lambda p=model.plan_for(1): p.run(x)
        )
        sess = ort_session(q8, t)
        name = sess.get_outputs()[0].name
        fns[f"onnxruntime int8 dynamic, {t} thread(s)"] = lambda s=sess, n=name: s.run(
            [n], {"x": x}
        )
    plan = rt.load(paths["int8"], threads=1).plan_for(1)
    steps = [getattr(f, "__name__", str(f)) for f, *_ in plan.head + plan.tail]
    wbytes = sum(-(-w.shape[1] // 16) * 16 * -(-w.shape[0] // 4) * 4 for w, _ in weights)
    return fns, steps, wbytes


def mlp_batch1(rounds, threads, block=100, settle=0.0, procs=1, as_json=False):
    """The int8 784-512-256-10 MLP at batch 1: our runtime (``lepton_nn.runtime.load`` of
    ``quantize(model)``'s file, ``predict``), its plan's bare compiled call, ONNX Runtime's
    ``quantize_dynamic`` of the same float weights (QInt8) at each thread count; per-call
    times in interleaved blocks (:func:`_per_call`). ``procs`` > 1: the same run in that
    many fresh processes one after another, each one's median and p5 printed, then the
    median of the processes' medians. Then the bound in cycles and the bytes/s achieved.
    ``as_json``: print nothing, return {engine: (median, p5, p95, min)} in us."""
    if procs > 1:
        import json
        import subprocess

        runs = []
        for _ in range(procs):
            cmd = [sys.executable, os.path.abspath(__file__), "--int8", "--json",
                   "--rounds", str(rounds), "--threads", ",".join(map(str, threads)),
                   "--block", str(block), "--settle", str(settle)]  # fmt: skip
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(out.splitlines()[-1]))
        print(f"\nint8 784-512-256-10 MLP, batch 1: {procs} fresh processes, {rounds} rounds "
              f"of {block} timed calls per engine each; per process median / p5 (us)")  # fmt: skip
        print("| engine | " + " | ".join(f"process {i + 1}" for i in range(procs))
              + " | median of medians |")  # fmt: skip
        print("|---|" + "---:|" * (procs + 1))
        for k in runs[0]["stats"]:
            cells = [f"{r['stats'][k][0]:.1f} / {r['stats'][k][1]:.1f}" for r in runs]
            mid = float(np.median([r["stats"][k][0] for r in runs]))
            print(f"| {k} | " + " | ".join(cells) + f" | {mid:.1f} |")
        print("load averages before / after each process:",
              [(r["load"][0], r["load"][1]) for r in runs])  # fmt: skip
        from lepton_nn.bench.hoststate import brief

        print("host (slowest CPU's speed, round trip) before -> after each process:",
              [f"{brief(r['host'][0], max(threads))} -> {brief(r['host'][1], max(threads))}"
               for r in runs])  # fmt: skip
        return
    from lepton_nn.bench.hoststate import describe, probe, reasons

    with tempfile.TemporaryDirectory() as tmp:
        fns, steps, wbytes = _mlp_engines(tmp, threads)
        host = [probe()]
        ts = _per_call(fns, rounds, block, settle)
        host.append(probe())
    stats = {k: (float(np.median(v)) * 1e6, float(np.percentile(v, 5)) * 1e6,
                 float(np.percentile(v, 95)) * 1e6, float(v.min()) * 1e6)
             for k, v in ts.items()}  # fmt: skip
    if as_json:
        return stats, host
    print(f"\nint8 784-512-256-10 MLP, batch 1: {wbytes / 1e6:.3f} MB of packed int8 weights "
          f"(N padded to 16, K to 4), {wbytes} multiply-adds; our plan: {steps}; per call, "
          f"{rounds} rounds of {block} calls per engine")  # fmt: skip
    print(f"host before: {describe(host[0])}; after: {describe(host[1])}"
          + ("  HOST UNEVEN" if reasons(host[0], max(threads)) + reasons(host[1], max(threads))
             else ""))  # fmt: skip
    print("| engine | median (us) | p5 (us) | p95 (us) | min (us) |")
    print("|---|---:|---:|---:|---:|")
    for k, (med, p5, p95, mn) in stats.items():
        print(f"| {k} | {med:.1f} | {p5:.1f} | {p95:.1f} | {mn:.1f} |")
    for t in threads:
        ours = stats[f"lepton runtime int8 predict, {t} thread(s)"][0]
        ort = stats[f"onnxruntime int8 dynamic, {t} thread(s)"][0]
        print(f"{t} thread(s): ONNX Runtime's median / ours {ort / ours:.2f}")
    run = stats[f"lepton plan.run (the compiled call(s) alone), {threads[0]} thread(s)"][0]
    print(
        f"\nbound: the GEMV takes 32 weight bytes (32 multiply-adds) per ymm step; Zen 3 "
        f"sustains at best ~1 step a cycle (vpmaddubsw + vpmaddwd on its 2 multiply pipes; "
        f"L2 -> L1 delivers ~32 B a cycle): {wbytes // 32} cycles, {wbytes / 32 / 3.0e3:.1f} "
        f"us at 3.0 GHz on one core, half per core at 2. plan.run ({threads[0]} thread(s)) "
        f"reads the weights at {wbytes / run / 1e3:.1f} GB/s (median)."
    )


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--ms", default="1,64,256,1024")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--no-mlp", action="store_true")
    ap.add_argument("--int8", action="store_true", help="only the int8 MLP at batch 1")
    ap.add_argument(
        "--settle",
        type=float,
        default=SETTLE,
        help="idle seconds before each engine's round at > 1 thread (0: none)",
    )
    ap.add_argument("--block", type=int, default=100, help="int8 MLP: timed calls a turn")
    ap.add_argument("--procs", type=int, default=1, help="int8 MLP: fresh processes")
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="W6 at 1 thread: wall time or the calling thread's CPU time (both engines run "
        "on the caller at 1 thread)",
    )
    ap.add_argument(
        "--ceiling",
        type=float,
        default=0.0,
        help="W6: one core's step ceiling in multiply-adds per ns (qgemm_parts.c), for the "
        "fraction-of-ceiling columns",
    )
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    threads = [int(t) for t in a.threads.split(",")]
    before = os.getloadavg()
    if a.json:  # one process of --procs: its figures as the last line
        import json

        stats, host = mlp_batch1(a.rounds, threads, a.block, a.settle, as_json=True)
        print(json.dumps({"stats": stats, "load": [before[0], os.getloadavg()[0]], "host": host}))
        return
    print("load average before:", before)
    if not a.int8:
        w6(
            [int(m) for m in a.ms.split(",")],
            threads,
            a.rounds,
            a.settle,
            a.clock == "cpu",
            a.ceiling,
        )
    if not a.no_mlp:
        mlp_settle = 0.0 if a.settle == SETTLE else a.settle  # blocks need no pause
        mlp_batch1(a.rounds, threads, a.block, mlp_settle, a.procs)
    print("\nload average after:", os.getloadavg())


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main(sys.argv[1:])
