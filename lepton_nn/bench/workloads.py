"""The benchmark workloads (issue 6): one definition, the same data and weights for every engine.

W1   tabular MLP training: 32 -> 64 -> 32 -> 1, ReLU, batch 64, Adam, BCE with logits
W2   MNIST-sized MLP training: 784 -> 512 -> 256 -> 10, ReLU, batch 128, Adam, cross-entropy
W3   small CNN training: 1x28x28 -> Conv 3x3 16 same, ReLU, MaxPool 2 -> Conv 3x3 32 same,
     ReLU, MaxPool 2 -> Dense 10, batch 64, Adam, cross-entropy
W4   LSTM training: 50 steps x 8 features -> LSTM 64 (last state) -> Dense 10, batch 32,
     Adam, cross-entropy
W5   inference of the W2 model: batch-1 latency (``W5b1``), batch-64 (``W5b64``, issue 23's
     miss against ONNX Runtime) and batch-256 throughput (``W5b256``)
W6   matrix multiply (M, 1024) x (1024, 1024) for M in 1, 64, 256, 1024 (``W6m1`` ...
     ``W6m1024``): float32 NumPy, int8 lepton_nn (``_qgemm``), ONNX Runtime
     ``MatMulInteger``, PyTorch dynamic quantization; GOP/s = 2 M K N / time
W8   inference of the W3 CNN, the W4 LSTM and a GRU of W4's size (``W4gru``) against ONNX
     Runtime, batch 1 (latency) and 64: ``W8cnn1``, ``W8cnn64``, ``W8lstm1`` ... ``W8gru64``
W7   cold start: a fresh process imports the engine, loads a saved W2 model and predicts
     one row (:mod:`lepton_nn.bench.coldstart`)
ACC  accuracy parity on ``credit_data.csv`` and digits (same architecture, Glorot init,
     Adam, epochs), test accuracy and ROC-AUC (:mod:`lepton_nn.bench.parity`)

Fairness: data and initial weights come from one seeded function each, so every process holds
bit-identical arrays (:func:`checksum` proves it); float32 everywhere; Adam with lr 1e-3,
betas (0.9, 0.999), eps 1e-8 (PyTorch's default; Keras' 1e-7 is overridden). This module
imports NumPy and nothing else.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np


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
INFERENCE = {"W5b1": (W2, 1), "W5b64": (W2, 64), "W5b256": (W2, 256)}  # the W2 model


@dataclass(frozen=True)
class NetSpec:
    """A CNN (``kind="cnn"``, W3), LSTM (``kind="lstm"``, W4) or GRU (``kind="gru"``, W8 only)
    workload.

    ``shape`` is one sample's shape in lepton_nn/PyTorch layout: (C, H, W) for the CNN (NCHW
    batches), (T, F) for the LSTM/GRU (batch first). ``widths``: the conv filters, or the
    recurrent units. Cross-entropy on ``classes`` logits, Adam (:data:`ADAM`).
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
        if self.kind != "cnn":
            return self.widths[-1]
        c, h, w = self.widths[-1], self.shape[1], self.shape[2]
        for _ in self.widths:
            h, w = h // self.pool, w // self.pool
        return c * h * w


W3 = NetSpec("W3", "cnn", (1, 28, 28), (16, 32), 64, seed=3)
W4 = NetSpec("W4", "lstm", (50, 8), (64,), 32, seed=4)
NETS = {"W3": W3, "W4": W4}
W4GRU = NetSpec("W4gru", "gru", (50, 8), (64,), 32, seed=5)
NET_INFERENCE = {  # issue 23: the runtime against ONNX Runtime on every network it serves
    f"W8{spec.kind}{b}": (spec, b) for spec in (W3, W4, W4GRU) for b in (1, 64)
}
MATMUL_K = MATMUL_N = 1024
MATMUL = {f"W6m{m}": m for m in (1, 64, 256, 1024)}  # (M, 1024) x (1024, 1024)
ADAM = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}


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


def net_inference_data(spec: NetSpec, batch: int, n_batches: int = 8) -> np.ndarray:
    """``(n_batches, batch, *spec.shape)`` float32 inputs for W8 inference."""
    rng = np.random.default_rng(spec.seed + 1)
    return rng.standard_normal((n_batches, batch, *spec.shape), dtype=np.float32)


def _glorot(rng, shape, fan_in: int, fan_out: int) -> np.ndarray:
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape).astype(np.float32)


def net_weights(spec: NetSpec) -> dict[str, np.ndarray]:
    """Initial weights in lepton_nn's layout (the builders convert for each peer).

    CNN: ``conv{k}_w`` (F, C, kh, kw) Glorot uniform, ``conv{k}_b`` zeros. LSTM: ``lstm_w_ih``
    (F, 4U) Glorot uniform, ``lstm_w_hh`` (U, 4U) orthogonal, ``lstm_b`` (4U,) zeros with the
    forget gate at 1; gate order i, f, g, o (Keras and PyTorch agree). GRU: the same with
    ``gru_`` names, 3U gates (z, r, n), zero ``gru_b`` and ``gru_b_hh``. Head: ``dense_w``
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
        f, u, k = spec.shape[1], spec.widths[0], spec.kind
        g = 4 if k == "lstm" else 3
        w[f"{k}_w_ih"] = _glorot(rng, (f, g * u), f, g * u)
        q, r = np.linalg.qr(rng.standard_normal((g * u, u)))
        w[f"{k}_w_hh"] = np.ascontiguousarray((q * np.sign(np.diag(r))).T, dtype=np.float32)
        b = np.zeros(g * u, np.float32)
        if k == "lstm":
            b[u : 2 * u] = 1.0
        w[f"{k}_b"] = b
        if k == "gru":
            w["gru_b_hh"] = np.zeros(g * u, np.float32)
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


def magnitude_pruned(weights, sparsity: float):
    """The smallest ``sparsity`` fraction of |W| set to zero, per layer."""
    out = []
    for w, b in weights:
        w = w.copy()
        w[np.abs(w) < np.quantile(np.abs(w), sparsity)] = 0
        out.append((w, b))
    return out


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


def training_flops(workload: str) -> int:
    """Floating-point operations of one training step per sample: the GEMM and convolution
    multiply-adds (2 FLOPs each) of the forward pass, the weight gradients and the input
    gradients (none for the network's own input); elementwise work is not counted.

    Dense ``(in -> out)``: forward ``2 in out``, ``dW`` ``2 in out``, ``dX`` ``2 in out``.
    Conv ``C -> F``, ``k x k``, ``H x W`` output: ``2 H W F C k^2`` each of the three. LSTM
    (T steps, F features, U units): forward ``2 T (F + U) 4U``, ``dW`` the same, ``dh``
    ``2 T U 4U`` (``dx`` not needed).
    """

    def dense(n_in: int, n_out: int, first: bool) -> int:
        return 2 * n_in * n_out * (2 if first else 3)

    if workload in TRAINING:
        sizes = TRAINING[workload].sizes
        return sum(dense(a, b, k == 0) for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])))
    if workload in NETS:
        spec = NETS[workload]
        head = dense(spec.flat, spec.classes, False)
        if spec.kind == "cnn":
            total, (c, h, w) = 0, spec.shape
            for i, f in enumerate(spec.widths):
                total += 2 * h * w * f * c * spec.kernel**2 * (2 if i == 0 else 3)
                c, h, w = f, h // spec.pool, w // spec.pool
            return total + head
        t, f, u = spec.shape[0], spec.shape[1], spec.widths[0]
        return 2 * t * 4 * u * (2 * (f + u) + u) + head
    raise ValueError(f"{workload!r} is not a training workload")


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
    if workload in NET_INFERENCE:
        spec, batch = NET_INFERENCE[workload]
        return checksum(net_inference_data(spec, batch), *net_weights(spec).values())
    if workload in MATMUL:
        return checksum(*matmul_data(MATMUL[workload]).values())
    raise ValueError(f"unknown workload {workload!r}")
