"""PyTorch's cases: the documented training loop (W1-W4), ``inference_mode`` (W5) and dynamic
quantization (W6). torch is imported inside each function only."""

from __future__ import annotations

import numpy as np

from ..cases import Case, cycle
from ..workloads import (
    ADAM,
    MATMUL_K,
    MATMUL_N,
    NetSpec,
    glorot_weights,
    inference_data,
    matmul_data,
    net_data,
    net_weights,
    training_data,
)


def torch_mlp(sizes, weights):
    """An ``nn.Sequential(Linear, ReLU, ...)`` holding ``weights`` (W (in, out) transposed)."""
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


def _mlp_training(workload, spec, model=None, data=None, layers_how=None) -> list[Case]:
    import torch

    x, y = data if data is not None else training_data(spec)
    xs = [torch.from_numpy(a) for a in cycle(x)]
    ys = [torch.from_numpy(a) for a in cycle(y)]
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


def _net_training(workload, spec) -> list[Case]:
    how = (
        "`nn.Sequential(Conv2d, ReLU, MaxPool2d, ..., Flatten, Linear)`, NCHW (PyTorch's "
        "default layout)"
        if spec.kind == "cnn"
        else "`nn.LSTM(batch_first=True)` (ATen's fused CPU LSTM) -> last h -> `nn.Linear`"
    )
    return _mlp_training(workload, spec, torch_net(spec, net_weights(spec)), net_data(spec), how)


def _matmul(workload, m) -> list[Case]:
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


def _inference(workload, spec_batch) -> list[Case]:
    import torch

    spec, batch = spec_batch
    xs = [torch.from_numpy(a) for a in cycle(inference_data(spec, batch))]
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


BUILDERS = {
    "mlp": _mlp_training,
    "inference": _inference,
    "net": _net_training,
    "matmul": _matmul,
}
