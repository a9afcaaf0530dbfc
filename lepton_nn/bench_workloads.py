"""Benchmark workloads (issue 6): one definition, the same data and weights for every engine.

Workloads
    W1   tabular MLP training: 32 -> 64 -> 32 -> 1, ReLU, batch 64, Adam, BCE with logits
    W2   MNIST-sized MLP training: 784 -> 512 -> 256 -> 10, ReLU, batch 128, Adam, cross-entropy
    W3   small CNN training: 1x28x28 -> Conv 3x3 16 same, ReLU, MaxPool 2 -> Conv 3x3 32 same,
         ReLU, MaxPool 2 -> Dense 10, batch 64, Adam, cross-entropy
    W4   LSTM training: 50 steps x 8 features -> LSTM 64 (last state) -> Dense 10, batch 32,
         Adam, cross-entropy
    W5   inference of the W2 model: batch-1 latency (``W5b1``) and batch-256 throughput
         (``W5b256``)
    W6   matrix multiply (M, 1024) x (1024, 1024) for M in 1, 64, 256, 1024 (``W6m1`` ...
         ``W6m1024``): float32 NumPy, int8 lepton_nn (``_qgemm``), ONNX Runtime
         ``MatMulInteger``, PyTorch dynamic quantization; GOP/s = 2 M K N / time
    W7   cold start: a fresh process imports the engine, loads a saved W2 model and predicts
         one row (the script for each engine is built here, timed by :mod:`lepton_nn.bench`)
    ACC  accuracy parity on ``credit_data.csv`` and digits (same architecture, Glorot init,
         Adam, epochs), test accuracy and ROC-AUC

Engines
    ``lepton:<backend>`` (``lepton:cython``, ``lepton:reference``, ``lepton:numba``), ``numpy``
    (a hand-written MLP with manual backprop: the ceiling of any NumPy engine), ``torch``,
    ``tensorflow``, ``onnxruntime`` (inference and the W6 int8 matmul). Peers are imported
    only inside their own builders, so this module imports NumPy and nothing else at load.
    :func:`supports` says which engines have cases for a workload.

Fairness: data and initial weights come from one seeded function each, so every process holds
bit-identical arrays (:func:`checksum` proves it); float32 everywhere; Adam with lr 1e-3,
betas (0.9, 0.999), eps 1e-8 (PyTorch's default; Keras' 1e-7 is overridden); thread counts are
set through each library's own API (:func:`configure_threads`) as well as the environment.

A *case* is one engine's way of running one workload: ``case.run(n)`` times ``n`` steps
(training steps or inference calls) and returns seconds, or per-call seconds for latency cases.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "MLPSpec",
    "NetSpec",
    "W1",
    "W2",
    "W3",
    "W4",
    "TRAINING",
    "NETS",
    "MATMUL",
    "MATMUL_K",
    "MATMUL_N",
    "INFERENCE",
    "ADAM",
    "Case",
    "ENGINES",
    "PEERS",
    "training_data",
    "net_data",
    "net_weights",
    "matmul_data",
    "workload_checksum",
    "supports",
    "inference_data",
    "glorot_weights",
    "checksum",
    "configure_threads",
    "build_cases",
    "NumpyMLP",
    "lepton_net",
    "torch_net",
    "keras_net",
    "onnx_matmulinteger_bytes",
    "quantize_weights_np",
    "coldstart_script",
    "parity",
    "parity_datasets",
]

# -- workload definitions ---------------------------------------------------------------------


@dataclass(frozen=True)
class MLPSpec:
    """A ReLU MLP workload: ``sizes`` from input to logits, trained on ``batch`` rows per step."""

    name: str
    sizes: tuple[int, ...]
    batch: int
    loss: str  # "bce" (one logit, 0/1 targets) or "ce" (C logits, integer labels)
    n_batches: int = 16  # distinct batches, cycled through (an "epoch" of fixed data)
    seed: int = 0


W1 = MLPSpec("W1", (32, 64, 32, 1), 64, "bce")
W2 = MLPSpec("W2", (784, 512, 256, 10), 128, "ce")
TRAINING = {"W1": W1, "W2": W2}
INFERENCE = {"W5b1": (W2, 1), "W5b256": (W2, 256)}  # the W2 model at batch 1 and 256


@dataclass(frozen=True)
class NetSpec:
    """A CNN (``kind="cnn"``, W3) or LSTM (``kind="lstm"``, W4) training workload.

    ``shape`` is one sample's shape in lepton_nn/PyTorch layout: (C, H, W) for the CNN (NCHW
    batches), (T, F) for the LSTM (batch first). ``widths``: the conv filters, or the LSTM
    units. Cross-entropy on ``classes`` logits, Adam (:data:`ADAM`).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    widths: tuple[int, ...]
    batch: int
    classes: int = 10
    kernel: int = 3  # CNN: 3x3 "same" convolutions, each followed by ReLU and MaxPool 2
    pool: int = 2
    n_batches: int = 8
    seed: int = 0
    loss: str = "ce"

    @property
    def flat(self) -> int:
        """Features entering the Dense head."""
        if self.kind == "lstm":
            return self.widths[-1]
        c, h, w = self.widths[-1], self.shape[1], self.shape[2]
        for _ in self.widths:
            h, w = h // self.pool, w // self.pool
        return c * h * w


W3 = NetSpec("W3", "cnn", (1, 28, 28), (16, 32), 64, seed=3)
W4 = NetSpec("W4", "lstm", (50, 8), (64,), 32, seed=4)
NETS = {"W3": W3, "W4": W4}
MATMUL_K = MATMUL_N = 1024
MATMUL = {f"W6m{m}": m for m in (1, 64, 256, 1024)}  # (M, 1024) x (1024, 1024)
ADAM = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}

ENGINES = ("lepton", "numpy", "torch", "tensorflow", "onnxruntime")
PEERS = ("tensorflow", "torch", "onnxruntime")  # optional engines (``--against``)
THREADS = {"n": 1}  # set by configure_threads; read by builders that take a thread count


def training_data(spec: MLPSpec) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``(n_batches, batch, in)`` float32 and targets labelled by a random teacher.

    BCE targets are float32 ``(n_batches, batch, 1)``; CE labels int64 ``(n_batches, batch)``.
    """
    rng = np.random.default_rng(spec.seed)
    x = rng.standard_normal((spec.n_batches, spec.batch, spec.sizes[0]), dtype=np.float32)
    teacher = rng.standard_normal((spec.sizes[0], spec.sizes[-1]), dtype=np.float32)
    scores = x @ teacher
    if spec.loss == "bce":
        return x, (scores[..., :1] > 0).astype(np.float32)
    return x, scores.argmax(axis=-1).astype(np.int64)


def inference_data(spec: MLPSpec, batch: int, n_batches: int = 8) -> np.ndarray:
    """``(n_batches, batch, in)`` float32 inputs for inference workloads."""
    rng = np.random.default_rng(spec.seed + 1)
    return rng.standard_normal((n_batches, batch, spec.sizes[0]), dtype=np.float32)


def glorot_weights(sizes, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Glorot-uniform weights ``W (in, out)`` and zero biases, float32, for each layer."""
    rng = np.random.default_rng(10_000 + seed)
    out = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        limit = math.sqrt(6.0 / (n_in + n_out))
        w = rng.uniform(-limit, limit, (n_in, n_out)).astype(np.float32)
        out.append((w, np.zeros(n_out, np.float32)))
    return out


def checksum(*arrays: np.ndarray) -> str:
    """CRC-32 of the arrays' bytes: equal in every process that built the same data."""
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(a).view(np.uint8), crc)
    return f"{crc:08x}"


def net_data(spec: NetSpec) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``(n_batches, batch, *spec.shape)`` float32 (NCHW / batch-first) and int64
    labels ``(n_batches, batch)`` from a random linear teacher."""
    rng = np.random.default_rng(spec.seed)
    x = rng.standard_normal((spec.n_batches, spec.batch, *spec.shape), dtype=np.float32)
    teacher = rng.standard_normal((int(np.prod(spec.shape)), spec.classes), dtype=np.float32)
    scores = x.reshape(spec.n_batches, spec.batch, -1) @ teacher
    return x, scores.argmax(axis=-1).astype(np.int64)


def _glorot(rng, shape, fan_in: int, fan_out: int) -> np.ndarray:
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape).astype(np.float32)


def net_weights(spec: NetSpec) -> dict[str, np.ndarray]:
    """Initial weights in lepton_nn's layout (the builders convert for each peer).

    CNN: ``conv{k}_w`` (F, C, kh, kw) Glorot uniform, ``conv{k}_b`` zeros. LSTM: ``lstm_w_ih``
    (F, 4U) Glorot uniform, ``lstm_w_hh`` (U, 4U) orthogonal, ``lstm_b`` (4U,) zeros with the
    forget gate at 1; gate order i, f, g, o (Keras and PyTorch agree). Head: ``dense_w``
    (in, classes) Glorot uniform, ``dense_b`` zeros; the CNN head reads features flattened in
    (C, H, W) order.
    """
    rng = np.random.default_rng(30_000 + spec.seed)
    w: dict[str, np.ndarray] = {}
    if spec.kind == "cnn":
        c, k = spec.shape[0], spec.kernel
        for i, f in enumerate(spec.widths, 1):
            w[f"conv{i}_w"] = _glorot(rng, (f, c, k, k), c * k * k, f * k * k)
            w[f"conv{i}_b"] = np.zeros(f, np.float32)
            c = f
    else:
        f, u = spec.shape[1], spec.widths[0]
        w["lstm_w_ih"] = _glorot(rng, (f, 4 * u), f, 4 * u)
        q, r = np.linalg.qr(rng.standard_normal((4 * u, u)))
        w["lstm_w_hh"] = np.ascontiguousarray((q * np.sign(np.diag(r))).T, dtype=np.float32)
        b = np.zeros(4 * u, np.float32)
        b[u : 2 * u] = 1.0
        w["lstm_b"] = b
    w["dense_w"] = _glorot(rng, (spec.flat, spec.classes), spec.flat, spec.classes)
    w["dense_b"] = np.zeros(spec.classes, np.float32)
    return w


def quantize_weights_np(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output row, as ``_qgemm.quantize_weights``: w float (N, K) ->
    (w_q int8 (N, K), scale float32 (N,)), scale = max|w_row| / 127 (1 for a zero row)."""
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    w_q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return w_q, scale


def matmul_data(m: int) -> dict[str, np.ndarray]:
    """W6 operands: ``w`` float32 (N, K) (a Linear layer's weight), ``bias`` (N,), its int8
    quantization ``w_q``/``w_scale``, activations ``x`` float32 (M, K) and ``x_q`` uint8 (M, K)
    (zero point 128). The weight is the same for every M."""
    rng = np.random.default_rng(60_000)
    k, n = MATMUL_K, MATMUL_N
    w = (rng.standard_normal((n, k), dtype=np.float32) / 32).astype(np.float32)
    bias = rng.standard_normal(n, dtype=np.float32)
    w_q, w_scale = quantize_weights_np(w)
    rx = np.random.default_rng(61_000 + m)
    x = rx.standard_normal((m, k), dtype=np.float32)
    x_q = rx.integers(0, 256, (m, k)).astype(np.uint8)
    return {"w": w, "bias": bias, "w_q": w_q, "w_scale": w_scale, "x": x, "x_q": x_q}


def workload_checksum(workload: str) -> str:
    """Checksum of every array a workload's cases are built from (data and initial weights)."""
    if workload in TRAINING:
        spec = TRAINING[workload]
        return checksum(*training_data(spec), *sum(glorot_weights(spec.sizes), ()))
    if workload in INFERENCE:
        spec, batch = INFERENCE[workload]
        return checksum(inference_data(spec, batch), *sum(glorot_weights(spec.sizes), ()))
    if workload in NETS:
        spec = NETS[workload]
        return checksum(*net_data(spec), *net_weights(spec).values())
    if workload in MATMUL:
        return checksum(*matmul_data(MATMUL[workload]).values())
    raise ValueError(f"unknown workload {workload!r}")


def configure_threads(engine: str, n: int) -> Any:
    """Pin ``engine`` to ``n`` threads through its own API (the caller also sets the
    environment: OMP/OPENBLAS/MKL_NUM_THREADS). Returns the threadpoolctl limiter (keep it)."""
    THREADS["n"] = int(n)
    if engine.startswith("lepton"):  # its intra-op threads (convolution chunks)
        from lepton_nn.backend.threads import set_num_threads

        set_num_threads(n)
    elif engine == "torch":
        import torch

        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # already started: only allowed once, before any parallel work
            pass
    elif engine == "tensorflow":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(n)
        except RuntimeError:  # the TF runtime already started in this process
            pass
    try:  # BLAS and OpenMP pools loaded so far (NumPy's OpenBLAS, torch's OpenMP...)
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=n)


def engine_versions(engine: str) -> dict[str, str]:
    """Versions of the libraries an engine runs on (imports them)."""
    import platform

    v = {"python": platform.python_version(), "numpy": np.__version__}
    if engine.startswith("lepton"):
        import lepton_nn

        v["lepton_nn"] = lepton_nn.__version__
    elif engine == "torch":
        import torch

        v["torch"] = torch.__version__
    elif engine == "tensorflow":
        import keras
        import tensorflow as tf

        v["tensorflow"], v["keras"] = tf.__version__, keras.__version__
    elif engine == "onnxruntime":
        import onnxruntime as ort

        v["onnxruntime"] = ort.__version__
        try:
            import onnx

            v["onnx"] = onnx.__version__
        except ImportError:
            pass
    return v


# -- cases ------------------------------------------------------------------------------------


@dataclass
class Case:
    """One engine's way of running one workload.

    ``step(i)`` runs step ``i`` (training step or inference call on batch ``i mod n``);
    ``round(n)``, when given, replaces the timed loop (Keras ``fit`` runs its own loop).
    ``latency`` cases return each call's seconds instead of the total. For W6, ``samples`` is
    the operations of one call (2 M K N) and ``unit`` is ``"op"``.
    """

    workload: str
    engine: str
    variant: str
    how: str
    samples: int  # rows per step
    step: Callable[[int], Any] | None = None
    round: Callable[[int], float] | None = None
    sync: Callable[[Any], Any] | None = None  # wait for asynchronous results, if any
    latency: bool = False
    info: dict = field(default_factory=dict)
    unit: str = "samples"  # what ``samples`` counts per step: "samples" or "op" (W6)

    @property
    def key(self) -> str:
        return f"{self.engine}/{self.variant}"

    def run(self, n: int) -> float | list[float]:
        if self.round is not None:
            return self.round(n)
        step, clock = self.step, time.perf_counter
        if self.latency:
            times = []
            for i in range(n):
                t = clock()
                step(i)
                times.append(clock() - t)
            return times
        out = None
        t = clock()
        for i in range(n):
            out = step(i)
        if self.sync is not None:
            self.sync(out)
        return clock() - t


# engines with cases for each workload family ("lepton" stands for every backend; W6 int8
# kernels run on the compiled backends only, see _lepton_matmul)
_FAMILY_ENGINES = {
    "mlp": ("lepton", "numpy", "torch", "tensorflow"),
    "inference": ("lepton", "numpy", "torch", "tensorflow", "onnxruntime"),
    "net": ("lepton", "torch", "tensorflow"),
    "matmul": ("lepton", "numpy", "torch", "onnxruntime"),
}


def _family(workload: str) -> str:
    if workload in TRAINING:
        return "mlp"
    if workload in INFERENCE:
        return "inference"
    if workload in NETS:
        return "net"
    if workload in MATMUL:
        return "matmul"
    raise ValueError(f"unknown workload {workload!r}")


def supports(engine: str, workload: str) -> bool:
    """Whether ``engine`` has cases for ``workload`` (without importing anything)."""
    base = engine.partition(":")[0]
    if workload in MATMUL and engine == "lepton:reference":
        return False
    return base in _FAMILY_ENGINES[_family(workload)]


def build_cases(engine: str, workload: str) -> list[Case]:
    """The cases of ``engine`` for ``workload`` (``W1``, ``W2``, ``W3``, ``W4``, ``W5b1``,
    ``W5b256``, ``W6m1`` ... ``W6m1024``).

    Raises ImportError when the engine is not installed, ValueError when it has no such
    workload (say, ONNX Runtime training).
    """
    family = _family(workload)
    if not supports(engine, workload):
        raise ValueError(f"{engine} has no {workload} workload")
    if engine.startswith("lepton"):
        backend = engine.partition(":")[2] or None
        fn = {
            "mlp": _lepton_training,
            "inference": _lepton_inference,
            "net": _lepton_net_training,
            "matmul": _lepton_matmul,
        }[family]
    else:
        fn = {
            "mlp": {
                "numpy": _numpy_training,
                "torch": _torch_training,
                "tensorflow": _tf_training,
            },
            "inference": {
                "numpy": _numpy_inference,
                "torch": _torch_inference,
                "tensorflow": _tf_inference,
                "onnxruntime": _ort_inference,
            },
            "net": {"torch": _torch_net_training, "tensorflow": _tf_net_training},
            "matmul": {
                "numpy": _numpy_matmul,
                "torch": _torch_matmul,
                "onnxruntime": _ort_matmul,
            },
        }[family][engine]
        backend = None
    spec = {
        "mlp": TRAINING,
        "inference": INFERENCE,
        "net": NETS,
        "matmul": MATMUL,
    }[family][workload]
    if engine.startswith("lepton"):
        return fn(workload, spec, backend)
    return fn(workload, spec)


def _cycle(x: np.ndarray):
    """Batches of ``x`` as a list (cheap per-step access, same for every engine)."""
    return [x[k] for k in range(len(x))]


# -- lepton_nn ---------------------------------------------------------------------------------


def _lepton_backend(backend: str | None):
    from lepton_nn import backend as B

    return B.set_backend(backend) if backend else B.get_backend()


def lepton_mlp(sizes, weights=None):
    """A lepton_nn Sequential of fused Dense layers (ReLU hidden, linear output)."""
    from lepton_nn import nn

    layers = []
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        act = "relu" if k < len(sizes) - 2 else None
        layers.append(nn.Dense(n_out, act, in_features=n_in))
    model = nn.Sequential(layers)
    if weights is not None:
        for layer, (w, b) in zip(layers, weights):
            layer.weight.data = w.copy()
            layer.bias.data = b.copy()
    return model


def _lepton_loss(kind: str):
    from lepton_nn import losses

    return losses.binary_cross_entropy_with_logits if kind == "bce" else losses.cross_entropy


def _lepton_training(workload, spec, backend) -> list[Case]:
    from lepton_nn import optim

    be = _lepton_backend(backend)
    x, y = training_data(spec)
    xs, ys, nb = _cycle(x), _cycle(y), len(x)
    model = lepton_mlp(spec.sizes, glorot_weights(spec.sizes))
    opt = optim.Adam(model.parameters(), lr=ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"])
    loss_fn = _lepton_loss(spec.loss)

    def step(i):
        k = i % nb
        opt.zero_grad()
        loss = loss_fn(model(xs[k]), ys[k])
        loss.backward()
        opt.step()

    label = f"lepton_nn:{be.name}"
    cases = [
        Case(
            workload,
            label,
            "step loop",
            f"`zero_grad(); loss_fn(model(x), y).backward(); Adam.step()` on the {be.name} "
            "backend (fused Dense: one GEMM + one epilogue kernel; fused Adam kernel)",
            spec.batch,
            step=step,
        )
    ]
    if be.name != "reference":
        cases.append(_lepton_fit_case(workload, spec, label, x, y))
    return cases


def _lepton_fit_case(workload, spec, label, x, y, make_model=None) -> Case:
    from lepton_nn.train import Trainer

    model = make_model() if make_model else lepton_mlp(spec.sizes, glorot_weights(spec.sizes))
    trainer = Trainer(
        model,
        "bce" if spec.loss == "bce" else "cross_entropy",
        "adam",
        lr=ADAM["lr"],
        optimizer_kwargs={"betas": ADAM["betas"], "eps": ADAM["eps"]},
    )
    xr, yr = _round_arrays(x, y)

    def round_(n):
        xa, ya = xr(n), yr(n)
        t = time.perf_counter()
        trainer.fit(xa, ya, epochs=1, batch_size=spec.batch, shuffle=False, verbose=0)
        return time.perf_counter() - t

    return Case(
        workload,
        label,
        "Trainer.fit",
        "`Trainer.fit(X, y, epochs=1, batch_size, shuffle=False, verbose=0)` per round "
        "(the Keras-fit equivalent: batching, callbacks, history)",
        spec.batch,
        round=round_,
    )


def _round_arrays(x, y):
    """Builders of the arrays for an n-step round (untimed): the batches cycled in order."""
    nb = len(x)

    def take(a):
        def make(n):
            idx = np.arange(n) % nb
            return np.ascontiguousarray(a[idx].reshape(n * a.shape[1], *a.shape[2:]))

        return make

    return take(x), take(y)


def lepton_net(spec: NetSpec, weights: dict[str, np.ndarray]):
    """The W3 CNN (NCHW) or W4 LSTM as a lepton_nn Sequential holding ``weights``."""
    from lepton_nn import nn

    if spec.kind == "cnn":
        layers, c = [], spec.shape[0]
        for f in spec.widths:
            layers += [
                nn.Conv2D(f, spec.kernel, padding="same", activation="relu", in_channels=c),
                nn.MaxPool2D(spec.pool),
            ]
            c = f
        layers.append(nn.Flatten())
        params = [(layers[2 * i], f"conv{i + 1}") for i in range(len(spec.widths))]
    else:
        lstm = nn.LSTM(spec.widths[0], input_size=spec.shape[1])
        lstm.weight_ih.data = weights["lstm_w_ih"].copy()
        lstm.weight_hh.data = weights["lstm_w_hh"].copy()
        lstm.bias.data = weights["lstm_b"].copy()
        layers, params = [lstm], []
    head = nn.Dense(spec.classes, in_features=spec.flat)
    layers.append(head)
    params.append((head, "dense"))
    for layer, name in params:
        layer.weight.data = weights[f"{name}_w"].copy()
        layer.bias.data = weights[f"{name}_b"].copy()
    return nn.Sequential(layers)


def _net_how(spec: NetSpec) -> str:
    if spec.kind == "cnn":
        return (
            "Conv2D/MaxPool2D/Flatten/Dense, NCHW (conv with fused bias + ReLU; each conv and "
            "the pool after it run as one op)"
        )
    return "LSTM (fused sequence kernel, last state) + Dense"


def _lepton_net_training(workload, spec, backend) -> list[Case]:
    from lepton_nn import losses, optim
    from lepton_nn.backend import use_backend

    be = _lepton_backend(backend)
    x, y = net_data(spec)
    xs, ys, nb = _cycle(x), _cycle(y), len(x)
    weights = net_weights(spec)
    name = be.name

    def stepper(model):
        opt = optim.Adam(model.parameters(), lr=ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"])

        def step(i):
            k = i % nb
            with use_backend(name):  # the pytest suites hold several backends in one process
                opt.zero_grad()
                loss = losses.cross_entropy(model(xs[k]), ys[k])
                loss.backward()
                opt.step()

        return step

    label = f"lepton_nn:{name}"
    how = f"`zero_grad(); cross_entropy(model(x), y).backward(); Adam.step()` on the {name} "
    cases = [
        Case(
            workload,
            label,
            "step loop",
            f"{how}backend; {_net_how(spec)}",
            spec.batch,
            step=stepper(lepton_net(spec, weights)),
        )
    ]
    if name != "reference" and spec.kind == "cnn":  # what the conv + pool fusion is worth
        unfused = lepton_net(spec, weights)
        unfused.fuse = False
        cases.append(
            Case(
                workload,
                label,
                "step loop, unfused",
                "the step loop with `Sequential(fuse=False)`: each Conv2D and MaxPool2D on its "
                "own, the full-size activation stored between them",
                spec.batch,
                step=stepper(unfused),
            )
        )
    if name != "reference":
        cases.append(
            _lepton_fit_case(workload, spec, label, x, y, lambda: lepton_net(spec, weights))
        )
    return cases


def _lepton_matmul(workload, m, backend) -> list[Case]:
    """int8 GEMM kernels (``lepton_nn.kernels._qgemm``, best ISA the CPU has)."""
    from lepton_nn.kernels import _qgemm as q

    be = _lepton_backend(backend)
    d = matmul_data(m)
    n = MATMUL_N
    nthreads = THREADS["n"]
    w_packed, col_sums = q.pack_weights(d["w_q"])
    x, x_q, w_scale, bias = d["x"], d["x_q"], d["w_scale"], d["bias"]
    out32 = np.empty((m, n), np.int32)
    out = np.empty((m, n), np.float32)
    xq_dyn = np.empty(x.shape, np.uint8)
    sc, zp = np.empty(m, np.float32), np.empty(m, np.int32)
    rows = min(m, 4)  # exactness check on a few rows (an int64 matmul has no BLAS)
    want = x_q[:rows].astype(np.int64) @ d["w_q"].T.astype(np.int64)
    got = q.qgemm_s32(x_q, w_packed, out32, nthreads=nthreads)
    if not np.array_equal(got[:rows], want):
        raise AssertionError("qgemm_s32 disagrees with the int64 reference")

    def dynamic(_i):
        q.quantize_rows(x, xq_dyn, sc, zp)
        return q.qlinear(xq_dyn, sc, zp, w_packed, w_scale, col_sums, bias, 0, out, nthreads)

    ops, label, isa = 2 * m * MATMUL_K * n, f"lepton_nn:{be.name}", q.isa()
    return [
        Case(
            workload,
            label,
            "qgemm_s32",
            f"`_qgemm.qgemm_s32(x_q, w_packed, out, nthreads)`: uint8 x int8 -> int32 ({isa} "
            "path, nthreads = the run's thread count, as for every int8 case); weights "
            "pre-packed once; the like-for-like of MatMulInteger",
            ops,
            step=lambda i: q.qgemm_s32(x_q, w_packed, out32, nthreads=nthreads),
            unit="op",
        ),
        Case(
            workload,
            label,
            "qlinear",
            "`_qgemm.qlinear`: uint8 activations (zero point 128) x int8 weights, int32 sum "
            "dequantized with per-channel scales + bias in the same call, float32 out",
            ops,
            step=lambda i: q.qlinear(
                x_q, 0.02, 128, w_packed, w_scale, col_sums, bias, 0, out, nthreads
            ),
            unit="op",
        ),
        Case(
            workload,
            label,
            "dynamic int8 Dense",
            "float32 in, float32 out: `quantize_rows` (per-row uint8) + `qlinear` (what a "
            "quantized Dense runs; the like-for-like of PyTorch dynamic quantization)",
            ops,
            step=dynamic,
            unit="op",
        ),
    ]


def _lepton_inference(workload, spec_batch, backend) -> list[Case]:
    from lepton_nn.autograd import no_grad

    spec, batch = spec_batch
    be = _lepton_backend(backend)
    xs = _cycle(inference_data(spec, batch))
    nb = len(xs)
    model = lepton_mlp(spec.sizes, glorot_weights(spec.sizes))
    model.eval()
    latency = batch == 1

    def step(i):
        with no_grad():
            return model(xs[i % nb]).data

    label = f"lepton_nn:{be.name}"
    cases = [
        Case(
            workload,
            label,
            "model(x)",
            f"`with no_grad(): model(x)` in eval mode, {be.name} backend",
            batch,
            step=step,
            latency=latency,
        )
    ]
    for variant, (predict, how) in _lepton_runtime(spec, model, xs[0]).items():
        cases.append(
            Case(
                workload,
                label,
                variant,
                how,
                batch,
                step=lambda i, f=predict: f(xs[i % nb]),
                latency=latency,
            )
        )
    return cases


def _lepton_runtime(spec, model, x) -> dict[str, tuple[Callable, str]]:
    """``{variant: (predict, how)}`` from lepton_nn's inference runtime: the float32 file and,
    when :mod:`lepton_nn.compress` offers them, int8 and 90 %-pruned files."""
    try:
        from lepton_nn import io, runtime
    except ImportError:
        return {}
    load = getattr(runtime, "load", None)
    if load is None:
        return {}
    from lepton_nn.autograd import no_grad

    with no_grad():
        model(x)  # records the input shape the file needs
    out = {}
    with tempfile.TemporaryDirectory(prefix="lepton-bench-") as tmp:
        path = os.path.join(tmp, "fp32.lnn")
        io.save(model, path)
        out["runtime"] = (
            load(path).predict,
            "`lepton_nn.runtime.load(path).predict(x)` (NumPy-only inference plan, float32 file)",
        )
        try:
            from lepton_nn.compress import quantize

            io.save(quantize(model), os.path.join(tmp, "int8.lnn"))
            out["runtime int8"] = (
                load(os.path.join(tmp, "int8.lnn")).predict,
                "runtime on `compress.quantize(model)` (int8 weights, dynamic activations)",
            )
        except (ImportError, AttributeError, TypeError, ValueError):
            pass
        try:
            from lepton_nn.compress import save_compressed

            pruned = lepton_mlp(spec.sizes, _magnitude_pruned(glorot_weights(spec.sizes), 0.9))
            with no_grad():
                pruned(x)
            save_compressed(pruned, os.path.join(tmp, "sparse.lnn"), min_sparsity=0.5)
            out["runtime pruned 90%"] = (
                load(os.path.join(tmp, "sparse.lnn")).predict,
                "runtime on a 90 %-magnitude-pruned copy (`compress.save_compressed`, sparse "
                "or dense per layer as it chooses)",
            )
        except (ImportError, AttributeError, TypeError, ValueError):
            pass
    for predict, _how in out.values():
        predict(x)
    return out


def _magnitude_pruned(weights, sparsity: float):
    """The smallest ``sparsity`` fraction of |W| set to zero, per layer."""
    out = []
    for w, b in weights:
        w = w.copy()
        w[np.abs(w) < np.quantile(np.abs(w), sparsity)] = 0
        out.append((w, b))
    return out


# -- hand-written NumPy -----------------------------------------------------------------------


class NumpyMLP:
    """The ceiling of any NumPy engine: a ReLU MLP with manual backprop and in-place Adam.

    params = [W0, b0, W1, b1, ...] with W (in, out); logits z = h W + b, h = max(z, 0).
    """

    def __init__(self, weights, loss: str, lr=ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"]):
        self.params = [a.copy() for wb in weights for a in wb]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.loss, self.lr, self.betas, self.eps, self.t = loss, lr, betas, eps, 0

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """Activations [x, h1, ..., z] (hidden ones after ReLU)."""
        hs, h = [x], x
        n_layers = len(self.params) // 2
        for k in range(n_layers):
            h = h @ self.params[2 * k]
            h += self.params[2 * k + 1]
            if k < n_layers - 1:
                np.maximum(h, 0, out=h)
            hs.append(h)
        return hs

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[-1]

    def step(self, x: np.ndarray, y: np.ndarray) -> None:
        hs = self.forward(x)
        z, n = hs[-1], len(x)
        if self.loss == "bce":  # d/dz mean BCE(sigmoid(z), y) = (sigmoid(z) - y) / N
            g = np.tanh(z * 0.5)
            g *= 0.5
            g += 0.5
            g -= y
        else:  # d/dz mean CE(softmax(z), y) = (softmax(z) - onehot(y)) / N
            g = z - z.max(axis=1, keepdims=True)
            np.exp(g, out=g)
            g /= g.sum(axis=1, keepdims=True)
            g[np.arange(n), y] -= 1
        g *= 1.0 / n
        grads = [None] * len(self.params)
        for k in reversed(range(len(self.params) // 2)):
            grads[2 * k] = hs[k].T @ g
            grads[2 * k + 1] = g.sum(axis=0)
            if k:
                g = g @ self.params[2 * k].T
                g *= hs[k] > 0  # ReLU'(z) = [h > 0]
        self.adam(grads)

    def adam(self, grads) -> None:
        """m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2; p <- p - lr_t m / (sqrt(v) + eps_t)."""
        self.t += 1
        b1, b2 = self.betas
        c2 = math.sqrt(1 - b2**self.t)
        lr_t, eps_t = self.lr * c2 / (1 - b1**self.t), self.eps * c2
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            g *= g
            g *= 1 - b2
            v += g
            d = np.sqrt(v)
            d += eps_t
            np.divide(m, d, out=d)
            d *= lr_t
            p -= d


def _numpy_training(workload, spec) -> list[Case]:
    x, y = training_data(spec)
    xs, ys, nb = _cycle(x), _cycle(y), len(x)
    net = NumpyMLP(glorot_weights(spec.sizes), spec.loss)
    return [
        Case(
            workload,
            "numpy",
            "hand-written",
            "plain NumPy: forward, manual backprop and in-place Adam, no graph (the ceiling of "
            "any NumPy engine)",
            spec.batch,
            step=lambda i: net.step(xs[i % nb], ys[i % nb]),
        )
    ]


def _numpy_inference(workload, spec_batch) -> list[Case]:
    spec, batch = spec_batch
    xs = _cycle(inference_data(spec, batch))
    nb = len(xs)
    net = NumpyMLP(glorot_weights(spec.sizes), spec.loss)
    return [
        Case(
            workload,
            "numpy",
            "hand-written",
            "plain NumPy forward: `h = x @ W; h += b; maximum(h, 0, out=h)` per layer",
            batch,
            step=lambda i: net.predict(xs[i % nb]),
            latency=batch == 1,
        )
    ]


def _numpy_matmul(workload, m) -> list[Case]:
    d = matmul_data(m)
    x, wt = d["x"], np.ascontiguousarray(d["w"].T)
    out = np.empty((m, MATMUL_N), np.float32)
    return [
        Case(
            workload,
            "numpy",
            "float32 matmul",
            "`np.matmul(x, W.T, out=out)` in float32 (NumPy's BLAS sgemm; W.T made "
            "contiguous once)",
            2 * m * MATMUL_K * MATMUL_N,
            step=lambda i: np.matmul(x, wt, out=out),
            unit="op",
        )
    ]


# -- PyTorch ------------------------------------------------------------------------------------


def torch_mlp(sizes, weights):
    import torch
    from torch import nn

    layers = []
    for k, (w, b) in enumerate(weights):
        lin = nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if k < len(weights) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _torch_training(workload, spec, model=None, data=None, layers_how=None) -> list[Case]:
    import torch

    x, y = data if data is not None else training_data(spec)
    xs = [torch.from_numpy(a) for a in _cycle(x)]
    ys = [torch.from_numpy(a) for a in _cycle(y)]
    nb = len(xs)
    if model is None:
        model = torch_mlp(spec.sizes, glorot_weights(spec.sizes))
    opt = torch.optim.Adam(model.parameters(), lr=ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"])
    loss_fn = torch.nn.BCEWithLogitsLoss() if spec.loss == "bce" else torch.nn.CrossEntropyLoss()

    def step(i):
        k = i % nb
        opt.zero_grad()
        loss = loss_fn(model(xs[k]), ys[k])
        loss.backward()
        opt.step()

    return [
        Case(
            workload,
            "torch",
            "standard loop",
            "the documented loop: `opt.zero_grad(); loss_fn(model(x), y).backward(); "
            "opt.step()` with `torch.optim.Adam` defaults (no foreach/fused on CPU), "
            + (layers_how or "`nn.Sequential(Linear, ReLU, ...)`"),
            spec.batch,
            step=step,
        )
    ]


def torch_net(spec: NetSpec, weights: dict[str, np.ndarray]):
    """The W3 CNN (NCHW, PyTorch's default layout) or W4 LSTM as a torch module."""
    import torch
    from torch import nn

    def put(param, value):
        with torch.no_grad():
            param.copy_(torch.from_numpy(np.ascontiguousarray(value)))

    head = nn.Linear(spec.flat, spec.classes)
    put(head.weight, weights["dense_w"].T)
    put(head.bias, weights["dense_b"])
    if spec.kind == "cnn":
        layers, c = [], spec.shape[0]
        for i, f in enumerate(spec.widths, 1):
            conv = nn.Conv2d(c, f, spec.kernel, padding="same")
            put(conv.weight, weights[f"conv{i}_w"])
            put(conv.bias, weights[f"conv{i}_b"])
            layers += [conv, nn.ReLU(), nn.MaxPool2d(spec.pool)]
            c = f
        return nn.Sequential(*layers, nn.Flatten(), head)

    class LastState(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(spec.shape[1], spec.widths[0], batch_first=True)
            self.head = head

        def forward(self, x):
            return self.head(self.lstm(x)[1][0][-1])

    net = LastState()
    put(net.lstm.weight_ih_l0, weights["lstm_w_ih"].T)  # gate order i, f, g, o in both
    put(net.lstm.weight_hh_l0, weights["lstm_w_hh"].T)
    put(net.lstm.bias_ih_l0, weights["lstm_b"])
    put(net.lstm.bias_hh_l0, np.zeros_like(weights["lstm_b"]))
    return net


def _torch_net_training(workload, spec) -> list[Case]:
    how = (
        "`nn.Sequential(Conv2d, ReLU, MaxPool2d, ..., Flatten, Linear)`, NCHW (PyTorch's "
        "default layout)"
        if spec.kind == "cnn"
        else "`nn.LSTM(batch_first=True)` (ATen's fused CPU LSTM) -> last h -> `nn.Linear`"
    )
    return _torch_training(workload, spec, torch_net(spec, net_weights(spec)), net_data(spec), how)


def _torch_matmul(workload, m) -> list[Case]:
    import warnings

    import torch

    d = matmul_data(m)
    lin = torch.nn.Linear(MATMUL_K, MATMUL_N)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(d["w"]))
        lin.bias.copy_(torch.from_numpy(d["bias"]))
    quantize_dynamic = getattr(getattr(torch, "ao", torch).quantization, "quantize_dynamic", None)
    if quantize_dynamic is None:
        raise ImportError("this torch has no quantize_dynamic")
    with warnings.catch_warnings():  # deprecated in favour of torchao from torch 2.10 on
        warnings.simplefilter("ignore")
        qmodel = quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8)
    qmodel.eval()
    x = torch.from_numpy(d["x"])

    def step(i):
        with torch.inference_mode():
            return qmodel(x)

    return [
        Case(
            workload,
            "torch",
            "dynamic quantization",
            "`torch.ao.quantization.quantize_dynamic(nn.Sequential(Linear), {Linear}, "
            "dtype=torch.qint8)` as its docs show, called under `inference_mode`: float32 in, "
            "dynamic per-tensor uint8 activations, int8 weights, float32 out "
            f"({torch.backends.quantized.engine} engine)",
            2 * m * MATMUL_K * MATMUL_N,
            step=step,
            unit="op",
        )
    ]


def _torch_inference(workload, spec_batch) -> list[Case]:
    import torch

    spec, batch = spec_batch
    xs = [torch.from_numpy(a) for a in _cycle(inference_data(spec, batch))]
    nb = len(xs)
    model = torch_mlp(spec.sizes, glorot_weights(spec.sizes)).eval()

    def step(i):
        with torch.inference_mode():
            return model(xs[i % nb])

    return [
        Case(
            workload,
            "torch",
            "inference_mode",
            "`with torch.inference_mode(): model(x)`, eval mode",
            batch,
            step=step,
            latency=batch == 1,
        )
    ]


# -- TensorFlow / Keras -----------------------------------------------------------------------


def keras_mlp(sizes, weights=None):
    import keras

    layers = [keras.Input((sizes[0],))]
    for k, n_out in enumerate(sizes[1:]):
        layers.append(keras.layers.Dense(n_out, activation="relu" if k < len(sizes) - 2 else None))
    model = keras.Sequential(layers)
    if weights is not None:
        model.set_weights([a for wb in weights for a in wb])
    return model


def _keras_loss(kind: str):
    import keras

    if kind == "bce":
        return keras.losses.BinaryCrossentropy(from_logits=True)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _keras_adam():
    import keras

    b1, b2 = ADAM["betas"]
    return keras.optimizers.Adam(
        learning_rate=ADAM["lr"], beta_1=b1, beta_2=b2, epsilon=ADAM["eps"]
    )


def keras_net(spec: NetSpec, weights: dict[str, np.ndarray]):
    """The W3 CNN or W4 LSTM in Keras, holding ``weights`` converted to Keras' layouts.

    The CNN is channels_last (NHWC): TensorFlow's recommended, and on CPU only fully
    supported, convolution layout. Kernels go (F, C, kh, kw) -> (kh, kw, C, F) and the head's
    rows are permuted from (C, H, W) to (H, W, C) flattening order, so the function computed is
    the same as lepton_nn's and PyTorch's.
    """
    import keras

    if spec.kind == "cnn":
        layers, vals = [keras.Input((*spec.shape[1:], spec.shape[0]))], []
        for i, f in enumerate(spec.widths, 1):
            layers += [
                keras.layers.Conv2D(f, spec.kernel, padding="same", activation="relu"),
                keras.layers.MaxPooling2D(spec.pool),
            ]
            vals += [weights[f"conv{i}_w"].transpose(2, 3, 1, 0), weights[f"conv{i}_b"]]
        c, h = spec.widths[-1], spec.shape[1] // spec.pool ** len(spec.widths)
        w = spec.shape[2] // spec.pool ** len(spec.widths)
        head = weights["dense_w"].reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(c * h * w, -1)
        layers += [keras.layers.Flatten(), keras.layers.Dense(spec.classes)]
        vals += [head, weights["dense_b"]]
    else:
        layers = [
            keras.Input(spec.shape),
            keras.layers.LSTM(spec.widths[0]),
            keras.layers.Dense(spec.classes),
        ]
        vals = [weights[k] for k in ("lstm_w_ih", "lstm_w_hh", "lstm_b", "dense_w", "dense_b")]
    model = keras.Sequential(layers)
    model.set_weights([np.ascontiguousarray(v) for v in vals])
    return model


def _keras_x(spec: NetSpec, x: np.ndarray) -> np.ndarray:
    """Batches in Keras' layout: NCHW -> NHWC for the CNN (converted once, untimed)."""
    return np.ascontiguousarray(np.moveaxis(x, 2, -1)) if spec.kind == "cnn" else x


def _tf_net_training(workload, spec) -> list[Case]:
    x, y = net_data(spec)
    weights = net_weights(spec)
    how = (
        "; Keras `Conv2D`/`MaxPooling2D` channels_last (NHWC: the layout TensorFlow recommends "
        "on CPU, data transposed once beforehand)"
        if spec.kind == "cnn"
        else "; Keras `LSTM(64)` with its default arguments (tanh/sigmoid, unit forget bias)"
    )
    return _tf_training(
        workload, spec, lambda: keras_net(spec, weights), (_keras_x(spec, x), y), how
    )


def _tf_training(workload, spec, make_model=None, data=None, how_extra="") -> list[Case]:
    import tensorflow as tf

    x, y = data if data is not None else training_data(spec)
    xs = [tf.constant(a) for a in _cycle(x)]
    ys = [tf.constant(a) for a in _cycle(y)]
    nb = len(xs)
    if make_model is None:

        def make_model():
            return keras_mlp(spec.sizes, glorot_weights(spec.sizes))

    model = make_model()
    opt, loss_fn = _keras_adam(), _keras_loss(spec.loss)

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    cases = [
        Case(
            workload,
            "tensorflow",
            "tf.function step",
            "a custom training step compiled with `@tf.function` (GradientTape + "
            "`optimizer.apply_gradients`), as in TF's 'training loop from scratch' guide; "
            "batches pre-converted to `tf.constant`; no XLA" + how_extra,
            spec.batch,
            step=lambda i: train_step(xs[i % nb], ys[i % nb]),
            sync=lambda out: out.numpy() if out is not None else None,
        )
    ]

    fit_model = make_model()
    fit_model.compile(optimizer=_keras_adam(), loss=_keras_loss(spec.loss))
    xr, yr = _round_arrays(x, y)

    def round_(n):
        xa, ya = xr(n), yr(n)
        t = time.perf_counter()
        fit_model.fit(xa, ya, batch_size=spec.batch, epochs=1, shuffle=False, verbose=0)
        return time.perf_counter() - t

    cases.append(
        Case(
            workload,
            "tensorflow",
            "Model.fit",
            "`model.compile(Adam, loss)` then `model.fit(X, y, batch_size, epochs=1, "
            "shuffle=False, verbose=0)` per round on NumPy arrays (Keras' recommended API; "
            "jit_compile left at its default, which is off on CPU)" + how_extra,
            spec.batch,
            round=round_,
        )
    )
    return cases


def _tf_inference(workload, spec_batch) -> list[Case]:
    import tensorflow as tf

    spec, batch = spec_batch
    x = inference_data(spec, batch)
    xs, ts = _cycle(x), [tf.constant(a) for a in _cycle(x)]
    nb = len(xs)
    model = keras_mlp(spec.sizes, glorot_weights(spec.sizes))
    compiled = tf.function(lambda t: model(t, training=False))
    latency = batch == 1
    return [
        Case(
            workload,
            "tensorflow",
            "model(x)",
            "Keras eager call `model(x, training=False)` on a tf.Tensor",
            batch,
            step=lambda i: model(ts[i % nb], training=False),
            latency=latency,
        ),
        Case(
            workload,
            "tensorflow",
            "tf.function",
            "`tf.function(lambda x: model(x, training=False))` on a tf.Tensor",
            batch,
            step=lambda i: compiled(ts[i % nb]),
            latency=latency,
        ),
        Case(
            workload,
            "tensorflow",
            "predict",
            "`model.predict(x, verbose=0)` on a NumPy array",
            batch,
            step=lambda i: model.predict(xs[i % nb], verbose=0),
            latency=latency,
        ),
    ]


# -- ONNX Runtime -------------------------------------------------------------------------------


def onnx_mlp_bytes(weights) -> bytes:
    """An ONNX graph of the MLP (MatMul, Add, Relu), built directly with ``onnx.helper``."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, h = [], [], "x"
    for k, (w, b) in enumerate(weights):
        inits += [numpy_helper.from_array(w, f"W{k}"), numpy_helper.from_array(b, f"b{k}")]
        nodes.append(helper.make_node("MatMul", [h, f"W{k}"], [f"m{k}"]))
        nodes.append(helper.make_node("Add", [f"m{k}", f"b{k}"], [f"z{k}"]))
        h = f"z{k}"
        if k < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [h], [f"h{k}"]))
            h = f"h{k}"
    n_in, n_out = weights[0][0].shape[0], weights[-1][0].shape[1]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info(h, TensorProto.FLOAT, ["N", n_out])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def ort_session(model: bytes | str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = threads
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def onnx_matmulinteger_bytes(w_q: np.ndarray, zero_point: int = 128) -> bytes:
    """``Y = MatMulInteger(A, B, a_zero_point)``: A uint8 (M, K) input, B int8 (K, N) =
    ``w_q.T`` an initializer, int32 out; built with ``onnx.helper``."""
    from onnx import TensorProto, helper, numpy_helper

    k, n = w_q.shape[1], w_q.shape[0]
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B", "a_zp"], ["Y"])],
        "qmm",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, ["M", k])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, ["M", n])],
        initializer=[
            numpy_helper.from_array(np.ascontiguousarray(w_q.T), "B"),
            numpy_helper.from_array(np.array(zero_point, np.uint8), "a_zp"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def _ort_matmul(workload, m) -> list[Case]:
    d = matmul_data(m)
    sess = ort_session(onnx_matmulinteger_bytes(d["w_q"]), THREADS["n"])
    feed = {"A": d["x_q"]}
    rows = min(m, 4)
    want = (d["x_q"][:rows].astype(np.int64) - 128) @ d["w_q"].T.astype(np.int64)
    if not np.array_equal(sess.run(None, feed)[0][:rows], want):
        raise AssertionError("MatMulInteger disagrees with the int64 reference")
    return [
        Case(
            workload,
            "onnxruntime",
            "MatMulInteger",
            "`InferenceSession.run` of a one-node `MatMulInteger` graph (onnx.helper): uint8 A "
            "(zero point 128) x int8 B initializer -> int32, CPU provider, threads set",
            2 * m * MATMUL_K * MATMUL_N,
            step=lambda i: sess.run(None, feed),
            unit="op",
        )
    ]


def _ort_inference(workload, spec_batch) -> list[Case]:
    spec, batch = spec_batch
    xs = _cycle(inference_data(spec, batch))
    nb = len(xs)
    sess = ort_session(onnx_mlp_bytes(glorot_weights(spec.sizes)), THREADS["n"])
    return [
        Case(
            workload,
            "onnxruntime",
            "InferenceSession",
            "`InferenceSession.run` on an ONNX graph (MatMul/Add/Relu built with onnx.helper), "
            "CPU provider, default graph optimizations, intra/inter-op threads set",
            batch,
            step=lambda i: sess.run(None, {"x": xs[i % nb]}),
            latency=batch == 1,
        )
    ]


# -- W7: cold start -------------------------------------------------------------------------------

_COLD_PRELUDE = "import time\n_t0 = time.perf_counter()\n"
_COLD_EPILOGUE = (
    "import json\n"
    "assert tuple(out.shape) == (1, {n_out}), out.shape\n"
    "print(json.dumps({{'seconds': time.perf_counter() - _t0, 'path': PATH_KIND}}))\n"
)


def coldstart_script(engine: str, directory: str) -> tuple[str, str]:
    """Save the W2 model for ``engine`` under ``directory``; return (script, how).

    The script, run in a fresh interpreter, imports the engine, loads the file, predicts one
    row, and prints ``{"seconds": in-process time}`` (the caller also times the process).
    """
    spec = W2
    weights = glorot_weights(spec.sizes)
    x_expr = f"np.full((1, {spec.sizes[0]}), 0.5, np.float32)"
    if engine.startswith("lepton"):
        from lepton_nn import io
        from lepton_nn.autograd import no_grad

        model = lepton_mlp(spec.sizes, weights)
        with no_grad():
            model(np.zeros((1, spec.sizes[0]), np.float32))
        path = os.path.join(directory, "w2.lnn")
        io.save(model, path)
        body = (
            "import numpy as np\n"
            "try:\n"
            "    from lepton_nn.runtime import load\n"
            "    PATH_KIND = 'lepton_nn.runtime'\n"
            "except ImportError:\n"
            "    load = None\n"
            "if load is not None:\n"
            f"    m = load({path!r})\n"
            f"    out = np.asarray((getattr(m, 'predict', None) or m)({x_expr}))\n"
            "else:\n"
            "    from lepton_nn import io, no_grad\n"
            "    PATH_KIND = 'lepton_nn.io.load + model(x)'\n"
            f"    m = io.load({path!r})\n"
            "    with no_grad():\n"
            f"        out = m({x_expr}).data\n"
        )
        how = (
            "`lepton_nn.runtime.load(path).predict(x)` when the runtime offers `load`, else "
            "`lepton_nn.io.load(path)` + `model(x)` under `no_grad()`; `.lnn` file"
        )
    elif engine == "numpy":
        path = os.path.join(directory, "w2.npz")
        np.savez(path, *[a for wb in weights for a in wb])
        body = (
            "import numpy as np\n"
            "PATH_KIND = 'numpy'\n"
            f"f = np.load({path!r})\n"
            "ps = [f[k] for k in f.files]\n"
            f"h = {x_expr}\n"
            "for k in range(0, len(ps), 2):\n"
            "    h = h @ ps[k] + ps[k + 1]\n"
            "    if k + 2 < len(ps):\n"
            "        h = np.maximum(h, 0)\n"
            "out = h\n"
        )
        how = "`np.load` of an `.npz` of the weights, forward in plain NumPy"
    elif engine == "torch":
        import torch

        path = os.path.join(directory, "w2.pt")
        torch.save(torch_mlp(spec.sizes, weights).state_dict(), path)
        sizes = list(spec.sizes)
        body = (
            "import numpy as np\n"
            "import torch\n"
            "from torch import nn\n"
            "PATH_KIND = 'torch'\n"
            f"s = {sizes!r}\n"
            "layers = []\n"
            "for k in range(len(s) - 1):\n"
            "    layers.append(nn.Linear(s[k], s[k + 1]))\n"
            "    if k < len(s) - 2:\n"
            "        layers.append(nn.ReLU())\n"
            "m = nn.Sequential(*layers)\n"
            f"m.load_state_dict(torch.load({path!r}, weights_only=True))\n"
            "m.eval()\n"
            "with torch.inference_mode():\n"
            f"    out = m(torch.from_numpy({x_expr})).numpy()\n"
        )
        how = "rebuild `nn.Sequential`, `load_state_dict(torch.load(path, weights_only=True))`"
    elif engine == "tensorflow":
        path = os.path.join(directory, "w2.keras")
        keras_mlp(spec.sizes, weights).save(path)
        body = (
            "import os\n"
            "os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')\n"
            "import numpy as np\n"
            "import keras\n"
            "PATH_KIND = 'keras'\n"
            f"m = keras.models.load_model({path!r})\n"
            f"out = np.asarray(m({x_expr}, training=False))\n"
        )
        how = "`keras.models.load_model(path.keras)` then `model(x)`"
    elif engine == "onnxruntime":
        path = os.path.join(directory, "w2.onnx")
        with open(path, "wb") as fh:
            fh.write(onnx_mlp_bytes(weights))
        body = (
            "import numpy as np\n"
            "import onnxruntime as ort\n"
            "PATH_KIND = 'onnxruntime'\n"
            f"s = ort.InferenceSession({path!r}, providers=['CPUExecutionProvider'])\n"
            f"out = s.run(None, {{'x': {x_expr}}})[0]\n"
        )
        how = "`onnxruntime.InferenceSession(path.onnx)` then `run`"
    else:
        raise ValueError(f"no cold-start script for {engine}")
    script = _COLD_PRELUDE + body + _COLD_EPILOGUE.format(n_out=spec.sizes[-1])
    return script, how


# -- accuracy parity ------------------------------------------------------------------------------

PARITY = {
    "credit": {"hidden": (64, 32), "batch": 64, "epochs": 30, "quick_epochs": 6},
    "digits": {"hidden": (64, 32), "batch": 64, "epochs": 40, "quick_epochs": 8},
}


def _find_digits() -> str | None:
    env = os.environ.get("LEPTON_DIGITS_CSV")
    if env and os.path.exists(env):
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    for base in (os.getcwd(), here, os.path.dirname(here)):
        for rel in ("shared/data", "../shared/data", "../../shared/data", "data"):
            p = os.path.normpath(os.path.join(base, rel, "digits.csv"))
            if os.path.exists(p):
                return p
    return None


def parity_datasets() -> dict[str, dict]:
    """Train/test splits (float32 features, integer labels) prepared with lepton_nn.data.

    credit: ``credit_data.csv`` (bundled), median imputation, one-hot, standard scaling fit on
    the training rows, positive class ``bad``. digits: ``digits.csv`` (the shared data folder,
    ``LEPTON_DIGITS_CSV``, or scikit-learn's copy), pixels / 16. Stratified 75/25 split, seed 0.
    """
    from lepton_nn.data import LabelEncoder, Preprocessor, read_csv, train_test_split
    from lepton_nn.datasets import load_credit

    out: dict[str, dict] = {}
    table = load_credit()
    y = LabelEncoder(positive="bad").fit_transform(table.target).astype(np.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.25, stratify=y, seed=0)
    pre = Preprocessor().fit(table.take(tr))
    out["credit"] = {
        "x_train": pre.transform(table.take(tr)).astype(np.float32),
        "y_train": y[tr],
        "x_test": pre.transform(table.take(te)).astype(np.float32),
        "y_test": y[te],
        "loss": "bce",
        "source": "credit_data.csv (bundled)",
    }
    path, x = _find_digits(), None
    if path is not None:
        t = read_csv(path, target="digit")
        # name the file, not where it sits on this machine
        x, yd, source = t.to_numpy(), np.asarray(t.target).astype(np.int64), "digits.csv"
    else:
        try:
            from sklearn.datasets import load_digits

            d = load_digits()
            x, yd, source = d.data, d.target.astype(np.int64), "scikit-learn load_digits()"
        except ImportError:
            pass
    if x is not None:
        x = (np.asarray(x, np.float64) / 16.0).astype(np.float32)
        tr, te = train_test_split(np.arange(len(yd)), test_size=0.25, stratify=yd, seed=0)
        out["digits"] = {
            "x_train": x[tr],
            "y_train": yd[tr],
            "x_test": x[te],
            "y_test": yd[te],
            "loss": "ce",
            "source": source,
        }
    return out


def _scores(loss: str, logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    if loss == "bce":
        return 1.0 / (1.0 + np.exp(-logits.reshape(-1)))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _metrics(loss: str, y: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    from lepton_nn import metrics

    p = _scores(loss, logits)
    pred = (p >= 0.5).astype(np.int64) if loss == "bce" else p.argmax(axis=1)
    return {"accuracy": metrics.accuracy(y, pred), "roc_auc": float(metrics.roc_auc(y, p))}


def _epoch_orders(n: int, epochs: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(20_000 + seed)
    return [rng.permutation(n) for _ in range(epochs)]


def parity(engine: str, quick: bool = False, seeds: int | None = None) -> list[dict]:
    """Train the parity models with ``engine``; one row per (dataset, mode, seed).

    Modes: ``shared``: identical initial weights (Glorot uniform from NumPy) and identical
    batch order in every engine (differences are numerics only). ``own``: each engine's own
    Glorot-uniform initializer and shuffling, seeded (differences are noise plus numerics):
    ``Trainer.fit`` for lepton_nn, ``Model.fit`` for Keras, a standard loop for PyTorch.
    ``quick`` runs the shared mode only, with fewer epochs.
    """
    n_seeds = seeds if seeds is not None else 3
    rows = []
    for name, data in parity_datasets().items():
        cfg = PARITY[name]
        epochs = cfg["quick_epochs"] if quick else cfg["epochs"]
        n_out = 1 if data["loss"] == "bce" else int(data["y_train"].max()) + 1
        sizes = (data["x_train"].shape[1], *cfg["hidden"], n_out)
        for mode in ("shared",) if quick else ("shared", "own"):
            for seed in range(n_seeds if mode == "own" else 1):
                t = time.perf_counter()
                logits = _parity_train(engine, mode, data, sizes, cfg["batch"], epochs, seed)
                rows.append(
                    {
                        "dataset": name,
                        "source": data["source"],
                        "mode": mode,
                        "seed": seed,
                        "epochs": epochs,
                        "sizes": list(sizes),
                        "seconds": time.perf_counter() - t,
                        **_metrics(data["loss"], data["y_test"], logits),
                    }
                )
    return rows


def _parity_train(engine, mode, data, sizes, batch, epochs, seed) -> np.ndarray:
    """Train and return the test logits."""
    x, y, x_test, loss = data["x_train"], data["y_train"], data["x_test"], data["loss"]
    yt = y.astype(np.float32).reshape(-1, 1) if loss == "bce" else y
    shared = mode == "shared"
    weights = glorot_weights(sizes, seed) if shared else None
    orders = _epoch_orders(len(x), epochs, seed) if shared else None
    if engine.startswith("lepton"):
        return _parity_lepton(
            engine, x, yt, x_test, loss, sizes, batch, epochs, seed, weights, orders
        )
    if engine == "numpy":
        net = NumpyMLP(weights or glorot_weights(sizes, 1000 + seed), loss)
        for order in orders or _epoch_orders(len(x), epochs, 1000 + seed):
            for s in range(0, len(x), batch):
                idx = order[s : s + batch]
                net.step(x[idx], yt[idx])
        return net.predict(x_test)
    if engine == "torch":
        return _parity_torch(x, yt, x_test, loss, sizes, batch, epochs, seed, weights, orders)
    if engine == "tensorflow":
        return _parity_keras(x, yt, x_test, loss, sizes, batch, epochs, seed, weights, orders)
    raise ValueError(f"{engine} has no parity run")


def _parity_lepton(engine, x, y, x_test, loss, sizes, batch, epochs, seed, weights, orders):
    import lepton_nn
    from lepton_nn.train import Trainer

    _lepton_backend(engine.partition(":")[2] or None)
    lepton_nn.set_seed(seed)
    if weights is not None:
        model = lepton_mlp(sizes, weights)
    else:
        from lepton_nn import nn

        acts = ["relu"] * (len(sizes) - 2) + [None]
        model = nn.Sequential([nn.Dense(n, a) for n, a in zip(sizes[1:], acts)])
    trainer = Trainer(
        model,
        "bce" if loss == "bce" else "cross_entropy",
        "adam",
        lr=ADAM["lr"],
        optimizer_kwargs={"betas": ADAM["betas"], "eps": ADAM["eps"]},
    )
    if orders is not None:
        for order in orders:
            trainer.fit(x[order], y[order], epochs=1, batch_size=batch, shuffle=False, verbose=0)
    else:
        trainer.fit(x, y, epochs=epochs, batch_size=batch, shuffle=True, verbose=0, seed=seed)
    return trainer.predict(x_test)


def _parity_torch(x, y, x_test, loss, sizes, batch, epochs, seed, weights, orders):
    import torch

    torch.manual_seed(seed)
    if weights is not None:
        model = torch_mlp(sizes, weights)
    else:
        model = torch_mlp(sizes, glorot_weights(sizes))  # shapes only; re-initialized below
        for m in model:
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.xavier_uniform_(m.weight)
                torch.nn.init.zeros_(m.bias)
    opt = torch.optim.Adam(model.parameters(), lr=ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"])
    loss_fn = torch.nn.BCEWithLogitsLoss() if loss == "bce" else torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for e in range(epochs):
        order = torch.from_numpy(orders[e]) if orders is not None else torch.randperm(len(x))
        for s in range(0, len(x), batch):
            idx = order[s : s + batch]
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(x_test)).numpy()


def _parity_keras(x, y, x_test, loss, sizes, batch, epochs, seed, weights, orders):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras_mlp(sizes, weights)
    model.compile(optimizer=_keras_adam(), loss=_keras_loss(loss))
    if orders is not None:
        for order in orders:
            model.fit(x[order], y[order], batch_size=batch, epochs=1, shuffle=False, verbose=0)
    else:
        model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=True, verbose=0)
    return np.asarray(model.predict(x_test, batch_size=1024, verbose=0))
