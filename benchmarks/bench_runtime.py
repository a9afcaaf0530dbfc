"""W5: inference of the MNIST-sized MLP 784 -> 512 -> 256 -> 10 (ReLU), batch 1 and 256.

Engines, all on the same weights: our runtime (``lepton_nn.runtime.load``) on the fp32 file,
the int8 file (dynamic activations) and a 90 %-pruned file (sparse or dense per layer, as
measured); ``model(x)`` through autograd; a hand-written NumPy forward; and, when installed,
ONNX Runtime (fp32, and its dynamic int8 quantization), PyTorch ``inference_mode`` (fp32,
and ``quantize_dynamic``), TensorFlow ``model(x)`` and ``tf.function``.

    python -m pytest benchmarks/bench_runtime.py --benchmark-columns=median,ops -q
    python benchmarks/bench_runtime.py [--rounds N]      # a Markdown table: median, p99, rows/s

Batch 1 is timed call by call (``pedantic``, one call per round) so that the p99 in
``extra_info`` is a real per-call tail; batch 256 reports rows/s. Threads: every engine on
its default count for this machine (NumPy's OpenBLAS, ONNX Runtime and PyTorch set to the
CPU count); our int8 and sparse kernels use one thread below 64 rows.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
import pytest
from workloads import magnitude_pruned, onnx_mlp_bytes

SIZES = (784, 512, 256, 10)
BATCHES = (1, 256)
THREADS = os.cpu_count() or 1
Engine = Callable[[np.ndarray], object]


# --------------------------------------------------------------------------- shared weights


def make_weights(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Glorot-uniform W (in, out) and small biases, float32."""
    rng = np.random.default_rng(seed)
    out = []
    for k, n in zip(SIZES[:-1], SIZES[1:], strict=True):
        lim = np.sqrt(6 / (k + n))
        w = rng.uniform(-lim, lim, (k, n)).astype(np.float32)
        out.append((w, (0.01 * rng.standard_normal(n)).astype(np.float32)))
    return out


def lepton_model(weights):
    import lepton_nn as L
    from lepton_nn import nn

    acts = ["relu"] * (len(weights) - 1) + [None]
    pairs = zip(weights, acts, strict=True)
    model = nn.Sequential([nn.Dense(w.shape[1], a, in_features=w.shape[0]) for (w, _), a in pairs])
    for layer, (w, b) in zip(model.layers, weights, strict=True):
        layer.weight.data = w.copy()
        layer.bias.data = b.copy()
    model.eval()
    model(np.zeros((1, SIZES[0]), np.float32))
    L.set_seed(0)
    return model


# --------------------------------------------------------------------------- engines


def _files(weights, tmp: str) -> dict[str, str]:
    import lepton_nn as L
    from lepton_nn.compress import quantize, save_compressed

    model = lepton_model(weights)
    paths = {k: os.path.join(tmp, f"{k}.lnn") for k in ("fp32", "int8", "sparse")}
    L.save(model, paths["fp32"])
    L.save(quantize(model), paths["int8"])
    save_compressed(lepton_model(magnitude_pruned(weights, 0.9)), paths["sparse"], min_sparsity=0.5)
    return paths


def engines(weights, tmp: str) -> dict[str, Callable[[], Engine]]:
    """name -> factory of a callable ``f(x)``; a factory raises ``pytest.skip`` if absent."""

    paths = _files(weights, tmp)

    def runtime(kind, **kw):
        def make():
            import lepton_nn.runtime as rt

            m = rt.load(paths[kind], **kw)
            return m.predict

        return make

    def autograd():
        model = lepton_model(weights)
        return lambda x: model(x).data

    def numpy_forward():
        (w1, b1), (w2, b2), (w3, b3) = weights

        def f(x):
            h = np.maximum(x @ w1 + b1, 0)
            h = np.maximum(h @ w2 + b2, 0)
            return h @ w3 + b3

        return f

    def onnx_model(int8: bool):
        def make():
            ort = pytest.importorskip("onnxruntime")
            pytest.importorskip("onnx")
            path = os.path.join(tmp, "mlp.onnx")
            with open(path, "wb") as fh:
                fh.write(onnx_mlp_bytes(weights))
            if int8:
                from onnxruntime.quantization import QuantType, quantize_dynamic

                qpath = os.path.join(tmp, "mlp_int8.onnx")
                quantize_dynamic(path, qpath, weight_type=QuantType.QInt8)
                path = qpath
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = THREADS
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            out = sess.get_outputs()[0].name
            return lambda x: sess.run([out], {"x": x})[0]

        return make

    def torch_model(int8: bool):
        def make():
            torch = pytest.importorskip("torch")
            torch.set_num_threads(THREADS)
            layers = []
            for i, (w, b) in enumerate(weights):
                lin = torch.nn.Linear(*w.shape)
                with torch.no_grad():
                    lin.weight.copy_(torch.from_numpy(w.T.copy()))
                    lin.bias.copy_(torch.from_numpy(b))
                layers.append(lin)
                if i < len(weights) - 1:
                    layers.append(torch.nn.ReLU())
            model = torch.nn.Sequential(*layers).eval()
            if int8:
                model = torch.ao.quantization.quantize_dynamic(
                    model, {torch.nn.Linear}, dtype=torch.qint8
                )

            def f(x):
                with torch.inference_mode():
                    return model(torch.from_numpy(x)).numpy()

            return f

        return make

    def tf_model(compiled: bool):
        def make():
            tf = pytest.importorskip("tensorflow")
            acts = ["relu"] * (len(weights) - 1) + [None]
            pairs = zip(weights, acts, strict=True)
            dense = [tf.keras.layers.Dense(w.shape[1], a) for (w, _), a in pairs]
            model = tf.keras.Sequential([tf.keras.Input((SIZES[0],)), *dense])
            for layer, (w, b) in zip(model.layers, weights, strict=True):
                layer.set_weights([w, b])
            if compiled:
                fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
                return lambda x: fn(x).numpy()
            return lambda x: model(x, training=False).numpy()

        return make

    return {
        "lepton runtime fp32": runtime("fp32"),
        "lepton runtime int8": runtime("int8"),
        "lepton runtime pruned-90% (auto)": runtime("sparse"),
        "lepton runtime pruned-90% (sparse)": runtime("sparse", sparse="sparse"),
        "lepton model(x) autograd": autograd,
        "numpy hand-written": numpy_forward,
        "onnxruntime fp32": onnx_model(False),
        "onnxruntime int8 dynamic": onnx_model(True),
        "torch inference_mode": torch_model(False),
        "torch int8 quantize_dynamic": torch_model(True),
        "tensorflow model(x)": tf_model(False),
        "tensorflow tf.function": tf_model(True),
    }


# --------------------------------------------------------------------------- pytest-benchmark


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    weights = make_weights()
    tmp = str(tmp_path_factory.mktemp("w5"))
    rng = np.random.default_rng(1)
    xs = {n: rng.standard_normal((n, SIZES[0])).astype(np.float32) for n in BATCHES}
    return weights, engines(weights, tmp), xs


NAMES = [
    "lepton runtime fp32",
    "lepton runtime int8",
    "lepton runtime pruned-90% (auto)",
    "lepton runtime pruned-90% (sparse)",
    "lepton model(x) autograd",
    "numpy hand-written",
    "onnxruntime fp32",
    "onnxruntime int8 dynamic",
    "torch inference_mode",
    "torch int8 quantize_dynamic",
    "tensorflow model(x)",
    "tensorflow tf.function",
]


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", NAMES)
def test_w5(benchmark, setup, name, batch):
    weights, table, xs = setup
    pytest.importorskip("pytest_benchmark")
    fn = table[name]()
    x = xs[batch]
    out = np.asarray(fn(x))
    assert out.shape == (batch, SIZES[-1])
    if "int8" not in name and "pruned" not in name:  # fp32 engines agree on the answer
        np.testing.assert_allclose(out, _reference(weights, x), rtol=1e-3, atol=1e-4)
    benchmark.group = f"W5 batch {batch}"
    if batch == 1:
        benchmark.pedantic(fn, (x,), rounds=2000, iterations=1, warmup_rounds=200)
        data = getattr(getattr(benchmark, "stats", None), "stats", None)
        if data is not None and getattr(data, "data", None):
            benchmark.extra_info["p99_us"] = round(float(np.percentile(data.data, 99)) * 1e6, 1)
    else:
        benchmark(fn, x)
        data = getattr(getattr(benchmark, "stats", None), "stats", None)
        if data is not None:
            benchmark.extra_info["rows_per_s"] = round(batch / data.median)


def _reference(weights, x):
    h = x.astype(np.float64)
    for i, (w, b) in enumerate(weights):
        h = h @ w + b
        if i < len(weights) - 1:
            h = np.maximum(h, 0)
    return h


# --------------------------------------------------------------------------- a plain table


def _time(fn: Engine, x: np.ndarray, rounds: int) -> np.ndarray:
    for _ in range(max(20, rounds // 10)):
        fn(x)
    ts = np.empty(rounds)
    for i in range(rounds):
        t0 = time.perf_counter()
        fn(x)
        ts[i] = time.perf_counter() - t0
    return ts


def main(argv: list[str]) -> None:
    rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 3000
    weights = make_weights()
    rng = np.random.default_rng(1)
    xs = {n: rng.standard_normal((n, SIZES[0])).astype(np.float32) for n in BATCHES}
    with tempfile.TemporaryDirectory() as tmp:
        table = engines(weights, tmp)
        print(f"W5 784-512-256-10 MLP, {THREADS} threads, {rounds} rounds at batch 1\n")
        print("| engine | batch 1 median (us) | batch 1 p99 (us) | batch 256 (rows/s) |")
        print("|---|---:|---:|---:|")
        for name in NAMES:
            try:
                fn = table[name]()
            except BaseException as exc:  # pytest.skip outside pytest, or a broken peer
                print(f"| {name} | skipped: {type(exc).__name__} | | |")
                continue
            t1 = _time(fn, xs[1], rounds)
            t256 = _time(fn, xs[256], max(30, rounds // 50))
            print(
                f"| {name} | {np.median(t1) * 1e6:.1f} | {np.percentile(t1, 99) * 1e6:.1f} "
                f"| {256 / np.median(t256):,.0f} |"
            )
            sys.stdout.flush()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main(sys.argv[1:])
