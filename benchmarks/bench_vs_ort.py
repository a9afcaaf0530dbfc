"""Issue 23's inference misses: our runtime against ONNX Runtime on the same weights, in one
process, interleaved rounds, medians.

Cases: the 784-512-256-10 MLP (fp32, ReLU) at batch 1 and 64, and an LSTM / GRU (T=50 steps,
F=8 features, U=64 units, last state) at batch 1 and 64, each at 1 and 2 threads. The ONNX
graphs are built with ``onnx.helper`` from the very arrays in the ``.lnn`` file (MatMul / Add
/ Relu; one ``LSTM`` / ``GRU`` node behind a ``Transpose`` to time-major). Threads: ONNX
Runtime's intra-op count; ours through NumPy's OpenBLAS count and ``threads=``.

    python benchmarks/bench_vs_ort.py [--rounds 15] [--cases mlp,lstm,gru]

Prints, per case, our median, ONNX Runtime's, and ONNX Runtime's time over ours (> 1: we are
faster), with the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

T, F, U = 50, 8, 64


def _mlp(rng):
    import lepton_nn as L
    from lepton_nn import nn

    sizes = (784, 512, 256, 10)
    layers = [
        nn.Dense(n, "relu" if i < 2 else None, in_features=k)
        for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
    ]
    model = nn.Sequential(layers)
    model.eval()
    model(np.zeros((1, 784), np.float32))
    L.set_seed(0)
    ws = [(layer.weight.data, layer.bias.data) for layer in model.layers]
    from lepton_nn.bench.engines.onnx_runtime import onnx_mlp_bytes

    return model, onnx_mlp_bytes(ws), (784,)


def _rnn(cell, rng):
    from onnx import TensorProto, helper, numpy_helper

    from lepton_nn import nn

    layer = (nn.LSTM if cell == "LSTM" else nn.GRU)(U, input_size=F)
    model = nn.Sequential([layer])
    model.eval()
    model(np.zeros((1, T, F), np.float32))
    for p in model.parameters():  # non-zero biases, so that both bias paths are exercised
        p.data[...] = rng.uniform(-0.5, 0.5, p.data.shape).astype(np.float32)
    w_ih, w_hh = layer.weight_ih.data, layer.weight_hh.data
    if cell == "LSTM":  # ours: blocks i, f, g, o; ONNX: i, o, f, c
        order = [0, 3, 1, 2]

        def blocks(a):
            return np.concatenate([a[..., k * U : (k + 1) * U] for k in order], axis=-1)

        wb = blocks(layer.bias.data)
        b = np.concatenate([wb, np.zeros_like(wb)])
        attrs = {}
    else:  # ours and ONNX: z, r, n; reset after the recurrent product
        blocks = np.asarray  # noqa: E731
        b = np.concatenate([layer.bias.data, layer.bias_hh.data])
        attrs = {"linear_before_reset": 1}
    inits = [
        numpy_helper.from_array(blocks(w_ih).T[None].copy(), "W"),
        numpy_helper.from_array(blocks(w_hh).T[None].copy(), "R"),
        numpy_helper.from_array(b[None].astype(np.float32), "B"),
    ]
    outs = ["Y", "Y_h"] if cell == "GRU" else ["Y", "Y_h", "Y_c"]
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node(cell, ["xt", "W", "R", "B"], outs, hidden_size=U, **attrs),
        helper.make_node("Squeeze", ["Y_h", "axes"], ["h"]),
    ]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "axes"))
    graph = helper.make_graph(
        nodes,
        cell.lower(),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", T, F])],
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["N", U])],
        initializer=inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, onnx_model.SerializeToString(), (T, F)


def _timed(fn, x, reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        fn(x)
    return (time.perf_counter() - t0) / reps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--cases", default="mlp,lstm,gru")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--budget", type=float, default=0.02, help="seconds per engine per round")
    args = ap.parse_args(argv)

    import lepton_nn as L
    import lepton_nn.runtime as rt
    from lepton_nn.backend.threads import _the_blas
    from lepton_nn.bench.engines.onnx_runtime import ort_session

    blas = _the_blas()
    rng = np.random.default_rng(0)
    print(f"load average before: {os.getloadavg()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases.split(","):
            model, onnx_bytes, shape = _mlp(rng) if name == "mlp" else _rnn(name.upper(), rng)
            path = os.path.join(tmp, f"{name}.lnn")
            L.save(model, path)
            for threads in map(int, args.threads.split(",")):
                ours = rt.load(path, threads=threads)
                sess = ort_session(onnx_bytes, threads)
                for n in map(int, args.batches.split(",")):
                    x = rng.standard_normal((n, *shape)).astype(np.float32)
                    if blas.set is not None:
                        blas.set(threads)
                    y_ours = ours.forward(x)
                    y_ort = sess.run(None, {"x": x})[0]
                    err = float(np.max(np.abs(y_ours - y_ort)))
                    if err > 1e-3:
                        print(f"  {name} n={n}: outputs differ by {err:.2e}", file=sys.stderr)
                    engines = {
                        "ours": ours.forward,
                        "ort": lambda a, s=sess: s.run(None, {"x": a}),
                    }
                    per = {k: _timed(f, x, 3) for k, f in engines.items()}
                    reps = {k: max(1, int(args.budget / max(v, 1e-7))) for k, v in per.items()}
                    times: dict[str, list[float]] = {k: [] for k in engines}
                    for r in range(args.rounds):
                        order = list(engines) if r % 2 == 0 else list(engines)[::-1]
                        for k in order:
                            times[k].append(_timed(engines[k], x, reps[k]))
                    med = {k: statistics.median(v) for k, v in times.items()}
                    ratio = med["ort"] / med["ours"]
                    rows.append((name, n, threads, med["ours"], med["ort"], ratio))
                    us = {k: f"{v * 1e6:9.1f} us" for k, v in med.items()}
                    print(
                        f"{name:5s} batch {n:3d} threads {threads}: ours {us['ours']}"
                        f"  ort {us['ort']}  ort/ours {ratio:5.2f}",
                        flush=True,
                    )
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
