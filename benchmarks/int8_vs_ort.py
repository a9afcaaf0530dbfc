"""Issue 23's int8 targets, in one process, interleaved rounds: our fused int8 GEMM against
ONNX Runtime's MatMulInteger on W6 ((M, 1024) x (1024, 1024), M in 1, 64, 256, 1024; 1 and 2
threads), and the quantized 784-512-256-10 MLP at batch 1 through our runtime against ONNX
Runtime's dynamic int8 quantization of the same weights.

    python benchmarks/int8_vs_ort.py [--rounds 21] [--ms 1,64,256,1024] [--threads 1,2]

W6: ours is ``qlinear`` (the uint8 x int8 GEMM with the dequantize + bias + ReLU epilogue
fused; what a quantized Dense runs), ONNX Runtime's the one-node MatMulInteger graph of
``lepton_nn.bench`` in the exact form this CPU allows (u8s8 when its results are exact, else
u8u8: MLAS's AVX2 u8s8 kernel saturates int16 pair sums). Each round times every engine on a
batch of calls (~0.1 s of work); printed: medians and minimums (the minimum is the least
disturbed figure on a loaded machine), ours over theirs (< 1: we are faster), GOP/s, and the
load average before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np


def _timed(fns: dict, rounds: int, reps: int) -> dict[str, np.ndarray]:
    ts = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            f()
            t = time.perf_counter()
            for _ in range(reps):
                f()
            ts[k].append((time.perf_counter() - t) / reps)
    return {k: np.array(v) for k, v in ts.items()}


def w6(ms, threads, rounds):
    import lepton_nn.kernels._qgemm as q

    from lepton_nn.bench.engines.onnx_runtime import onnx_matmulinteger_bytes, ort_session
    from lepton_nn.bench.workloads import matmul_data

    w_q = matmul_data(1)["w_q"]
    wp, cs = q.pack_weights(w_q)
    print(f"\nW6 int8 GEMM, isa {q.isa()}: ours = qlinear, ORT = MatMulInteger")
    print(
        "| M | threads | ours median (us) | ORT median (us) | ours/ORT median | ours/ORT min "
        "| ours GOP/s | ORT GOP/s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
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
            ts = _timed(fns, rounds, reps)
            med = {k: float(np.median(v)) for k, v in ts.items()}
            mn = {k: float(v.min()) for k, v in ts.items()}
            ops = 2 * m * 1024 * 1024
            print(
                f"| {m} | {t} | {med['ours'] * 1e6:.1f} | {med['ort'] * 1e6:.1f} "
                f"| {med['ours'] / med['ort']:.2f} | {mn['ours'] / mn['ort']:.2f} "
                f"| {ops / med['ours'] / 1e9:.1f} | {ops / med['ort'] / 1e9:.1f} |"
            )
            sys.stdout.flush()


def mlp_batch1(rounds):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_runtime as br

    weights = br.make_weights()
    x = np.random.default_rng(1).standard_normal((1, br.SIZES[0])).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        table = br.engines(weights, tmp)
        fns = {n: table[n]() for n in ("lepton runtime int8", "onnxruntime int8 dynamic")}
        ts = _timed({k: (lambda f=f: f(x)) for k, f in fns.items()}, rounds * 100, 1)
    wbytes = sum(w.size for w, _ in weights)
    print(f"\nint8 784-512-256-10 MLP, batch 1 (int8 weights {wbytes / 1e6:.2f} MB)")
    print("| engine | median (us) | min (us) |")
    print("|---|---:|---:|")
    for k, v in ts.items():
        print(f"| {k} | {np.median(v) * 1e6:.1f} | {v.min() * 1e6:.1f} |")


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--ms", default="1,64,256,1024")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--no-mlp", action="store_true")
    a = ap.parse_args(argv)
    print("load average before:", os.getloadavg())
    w6([int(m) for m in a.ms.split(",")], [int(t) for t in a.threads.split(",")], a.rounds)
    if not a.no_mlp:
        mlp_batch1(a.rounds)
    print("\nload average after:", os.getloadavg())


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main(sys.argv[1:])
