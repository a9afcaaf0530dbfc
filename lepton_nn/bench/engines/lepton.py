"""lepton_nn's cases: the step loop and ``Trainer.fit`` for training (W1-W4), ``model(x)`` and
the NumPy-only runtime (float32, int8, pruned files) for inference (W5; float32 for the W8
CNN/LSTM/GRU), the int8 GEMM kernels
(``lepton_nn.kernels._qgemm``) for W6. ``backend`` names the lepton_nn backend to run on.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable

import numpy as np

from ..cases import THREADS, Case, cycle, round_arrays
from ..workloads import (
    ADAM,
    MATMUL_K,
    MATMUL_N,
    NetSpec,
    glorot_weights,
    inference_data,
    magnitude_pruned,
    matmul_data,
    net_data,
    net_inference_data,
    net_weights,
    training_data,
)

RUNTIME_HOW = "`lepton_nn.runtime.load(path).predict(x)` (NumPy-only inference plan, float32 file)"


def lepton_backend(backend: str | None):
    """Switch to lepton_nn backend ``backend`` (None: keep the active one); returns it."""
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


def _loss(kind: str):
    from lepton_nn import losses

    return losses.binary_cross_entropy_with_logits if kind == "bce" else losses.cross_entropy


def _mlp_training(workload, spec, backend) -> list[Case]:
    from lepton_nn import optim

    be = lepton_backend(backend)
    x, y = training_data(spec)
    xs, ys, nb = cycle(x), cycle(y), len(x)
    model = lepton_mlp(spec.sizes, glorot_weights(spec.sizes))
    opt = optim.Adam(model.parameters(), lr=ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"])
    loss_fn = _loss(spec.loss)

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
        cases.append(_fit_case(workload, spec, label, x, y))
        compiled = _compiled_case(workload, spec, label, x, y)
        if compiled is not None:
            cases.append(compiled)
    return cases


def _compiled_case(workload, spec, label, x, y) -> Case | None:
    """The same step through ``lepton_nn.compile`` (None without Numba)."""
    import importlib.util

    if importlib.util.find_spec("numba") is None:
        return None
    import lepton_nn
    from lepton_nn import optim

    model = lepton_mlp(spec.sizes, glorot_weights(spec.sizes))
    opt = optim.Adam(model.parameters(), lr=ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"])
    loss_fn = _loss(spec.loss)

    def train_step(xb, yb):
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    step = lepton_nn.compile(train_step)
    xs, ys, nb = cycle(x), cycle(y), len(x)
    for k in range(3):  # capture, validate, and the Numba compilation: before any timing
        step(xs[k], ys[k])
    return Case(
        workload,
        label,
        "compiled step",
        "`lepton_nn.compile(train_step)`: the same step's tape (forward, backward, Adam) "
        "replayed as one generated Numba function per step (BLAS GEMMs, fused loops)",
        spec.batch,
        step=lambda i: step(xs[i % nb], ys[i % nb]),
    )


def _fit_case(workload, spec, label, x, y, make_model=None) -> Case:
    from lepton_nn.train import Trainer

    model = make_model() if make_model else lepton_mlp(spec.sizes, glorot_weights(spec.sizes))
    trainer = Trainer(
        model,
        "bce" if spec.loss == "bce" else "cross_entropy",
        "adam",
        lr=ADAM["lr"],
        optimizer_kwargs={"betas": ADAM["betas"], "eps": ADAM["eps"]},
    )
    xr, yr = round_arrays(x, y)

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


def lepton_net(spec: NetSpec, weights: dict[str, np.ndarray]):
    """The W3 CNN (NCHW), W4 LSTM or W8 GRU as a lepton_nn Sequential holding ``weights``."""
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
        k = spec.kind
        rnn = (nn.LSTM if k == "lstm" else nn.GRU)(spec.widths[0], input_size=spec.shape[1])
        rnn.weight_ih.data = weights[f"{k}_w_ih"].copy()
        rnn.weight_hh.data = weights[f"{k}_w_hh"].copy()
        rnn.bias.data = weights[f"{k}_b"].copy()
        if k == "gru":
            rnn.bias_hh.data = weights["gru_b_hh"].copy()
        layers, params = [rnn], []
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
    return f"{spec.kind.upper()} (fused sequence kernel, last state) + Dense"


def _net_training(workload, spec, backend) -> list[Case]:
    from lepton_nn import losses, optim
    from lepton_nn.backend import use_backend

    be = lepton_backend(backend)
    x, y = net_data(spec)
    xs, ys, nb = cycle(x), cycle(y), len(x)
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
        cases.append(_fit_case(workload, spec, label, x, y, lambda: lepton_net(spec, weights)))
    return cases


def _matmul(workload, m, backend) -> list[Case]:
    """int8 GEMM kernels (``lepton_nn.kernels._qgemm``, best ISA the CPU has)."""
    from lepton_nn.kernels import _qgemm as q

    be = lepton_backend(backend)
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


def _inference(workload, spec_batch, backend) -> list[Case]:
    from lepton_nn.autograd import no_grad

    spec, batch = spec_batch
    be = lepton_backend(backend)
    xs = cycle(inference_data(spec, batch))
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
    for variant, (predict, how) in _runtime_variants(spec, model, xs[0]).items():
        cases.append(
            Case(
                workload,
                label,
                variant,
                how,
                batch,
                step=lambda i, f=predict: f(xs[i % nb]),
                latency=latency,
                jobs=_pool_jobs() if latency else None,
            )
        )
    return cases


def _pool_jobs():
    """A recorder of the native pool's jobs for Case.jobs (None without the compiled pool)."""
    try:
        from lepton_nn.kernels import _pool
    except ImportError:
        return None

    def start(n: int):
        _pool.start_trace(4 * n)  # a call may run several jobs (the sparse chain: two)

        def stop():
            rec = _pool.stop_trace()
            return rec["post_ns"], rec["job_ns"]

        return stop

    return start


def _net_inference(workload, spec_batch, backend) -> list[Case]:
    """W8: ``model(x)`` and the runtime on the W3 CNN / W4 LSTM / GRU's initial weights."""
    from lepton_nn import io, runtime
    from lepton_nn.autograd import no_grad

    spec, batch = spec_batch
    be = lepton_backend(backend)
    xs = cycle(net_inference_data(spec, batch))
    nb = len(xs)
    model = lepton_net(spec, net_weights(spec))
    model.eval()

    def step(i):
        with no_grad():
            return model(xs[i % nb]).data

    step(0)  # records the input shape the file needs
    with tempfile.TemporaryDirectory(prefix="lepton-bench-") as tmp:
        path = os.path.join(tmp, "net.lnn")
        io.save(model, path)
        predict = runtime.load(path).predict
    predict(xs[0])
    label = f"lepton_nn:{be.name}"
    return [
        Case(
            workload,
            label,
            "model(x)",
            f"`with no_grad(): model(x)` in eval mode, {be.name} backend",
            batch,
            step=step,
            latency=batch == 1,
        ),
        Case(
            workload,
            label,
            "runtime",
            RUNTIME_HOW,
            batch,
            step=lambda i: predict(xs[i % nb]),
            latency=batch == 1,
        ),
    ]


def _runtime_variants(spec, model, x) -> dict[str, tuple[Callable, str]]:
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
        out["runtime"] = (load(path).predict, RUNTIME_HOW)
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

            pruned = lepton_mlp(spec.sizes, magnitude_pruned(glorot_weights(spec.sizes), 0.9))
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


BUILDERS = {
    "mlp": _mlp_training,
    "inference": _inference,
    "net": _net_training,
    "net inference": _net_inference,
    "matmul": _matmul,
}
