"""PyTorch as an independent oracle (skipped when torch is not installed).

The same weights in float64 give the same outputs, gradients and parameters after several
optimizer steps; the losses, LR schedules and gradient clipping agree with torch's.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import lepton_nn as ln  # noqa: E402
from lepton_nn import Tensor, losses, optim  # noqa: E402
from lepton_nn.nn import Dense, Parameter, Sequential  # noqa: E402

torch.set_num_threads(1)
TOL = {"rtol": 1e-6, "atol": 1e-9}


def t64(a, grad=False):
    return torch.tensor(np.asarray(a, np.float64), requires_grad=grad)


def close(ours, theirs, **tol):
    if isinstance(theirs, torch.Tensor):
        theirs = theirs.detach().numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs, **(tol or TOL))


# -- a model and its twin ------------------------------------------------------------------------

ACTS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid}


def twins(acts=("tanh", "relu"), sizes=(5, 16, 8, 3), seed=0):
    ln.set_seed(seed)
    layers = [Dense(n, a) for n, a in zip(sizes[1:-1], acts)] + [Dense(sizes[-1])]
    ours = Sequential(layers).astype("float64").build((None, sizes[0]))
    mods = []
    for (n_in, n_out), a in zip(zip(sizes[:-1], sizes[1:]), [*acts, None]):
        mods.append(torch.nn.Linear(n_in, n_out).double())
        if a == "gelu":
            mods.append(torch.nn.GELU(approximate="tanh"))
        elif a:
            mods.append(ACTS[a]())
    theirs = torch.nn.Sequential(*mods)
    linears = [m for m in theirs if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for layer, lin in zip(ours, linears):
            lin.weight.copy_(torch.from_numpy(layer.weight.data.T.copy()))
            lin.bias.copy_(torch.from_numpy(layer.bias.data))
    return ours, theirs, linears


def batch(n=12, d=5, c=3, seed=1):
    r = np.random.default_rng(seed)
    return r.standard_normal((n, d)), r.integers(0, c, n)


def assert_same_params(ours, linears):
    for layer, lin in zip(ours, linears):
        close(layer.weight.data, lin.weight.detach().numpy().T)
        close(layer.bias.data, lin.bias)


@pytest.mark.parametrize("acts", [("tanh", "relu"), ("sigmoid", "gelu")])
def test_outputs_and_gradients(acts):
    ours, theirs, linears = twins(acts)
    x, y = batch()
    out = ours(x)
    ref = theirs(t64(x))
    close(out.data, ref)
    losses.cross_entropy(out, y).backward()
    F.cross_entropy(ref, torch.from_numpy(y)).backward()
    for layer, lin in zip(ours, linears):
        close(layer.weight.grad, lin.weight.grad.numpy().T)
        close(layer.bias.grad, lin.bias.grad)


def test_input_gradient():
    ours, theirs, _ = twins()
    x, _ = batch()
    xo = Tensor(x, requires_grad=True)
    xt = t64(x, grad=True)
    (ours(xo) ** 2).sum().backward()
    (theirs(xt) ** 2).sum().backward()
    close(xo.grad, xt.grad)


OPTIMIZERS = {
    "adam": (
        lambda ps: optim.Adam(ps, lr=0.01, betas=(0.85, 0.99), eps=1e-7),
        lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.85, 0.99), eps=1e-7),
    ),
    "adam_l2": (
        lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.1),
        lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.1),
    ),
    "adamw": (
        lambda ps: optim.AdamW(ps, lr=0.01, weight_decay=0.1),
        lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1),
    ),
    "sgd": (
        lambda ps: optim.SGD(ps, lr=0.1),
        lambda ps: torch.optim.SGD(ps, lr=0.1),
    ),
    "sgd_momentum_wd": (
        lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01),
    ),
    "sgd_nesterov": (
        lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    ),
    "rmsprop": (
        lambda ps: optim.RMSprop(ps, lr=0.01),
        lambda ps: torch.optim.RMSprop(ps, lr=0.01),
    ),
    "rmsprop_centered_momentum": (
        lambda ps: optim.RMSprop(
            ps, lr=0.005, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.01
        ),
        lambda ps: torch.optim.RMSprop(
            ps, lr=0.005, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.01
        ),
    ),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_parameters_after_five_steps(name):
    make_ours, make_theirs = OPTIMIZERS[name]
    ours, theirs, linears = twins()
    opt = make_ours(ours.parameters())
    topt = make_theirs(theirs.parameters())
    for step in range(5):
        x, y = batch(seed=10 + step)
        opt.zero_grad()
        loss = losses.cross_entropy(ours(x), y)
        loss.backward()
        opt.step()
        topt.zero_grad()
        tloss = F.cross_entropy(theirs(t64(x)), torch.from_numpy(y))
        tloss.backward()
        topt.step()
        close(loss.data, tloss)
    assert_same_params(ours, linears)


@pytest.mark.parametrize("name", ["adam", "sgd_nesterov"])
def test_float32_training_tracks_torch(name):
    make_ours, make_theirs = OPTIMIZERS[name]
    ours, theirs, linears = twins()
    ours.astype("float32")
    theirs.float()
    opt, topt = make_ours(ours.parameters()), make_theirs(theirs.parameters())
    for step in range(5):
        x, y = batch(seed=20 + step)
        opt.zero_grad()
        losses.cross_entropy(ours(x.astype(np.float32)), y).backward()
        opt.step()
        topt.zero_grad()
        F.cross_entropy(
            theirs(torch.tensor(x, dtype=torch.float32)), torch.from_numpy(y)
        ).backward()
        topt.step()
    for layer, lin in zip(ours, linears):
        close(layer.weight.data, lin.weight.detach().numpy().T, rtol=1e-4, atol=1e-5)


# -- losses --------------------------------------------------------------------------------------

R = np.random.default_rng(5)
N = 8
PRED = R.standard_normal((N, 3))
TARGET = R.standard_normal((N, 3))
W = R.uniform(0.2, 2.0, N)


def reduce_like_ours(per_elem, weight, reduction):
    """Our documented convention on torch's elementwise loss: mean over non-batch axes,
    times the sample weight, then mean over N, sum, or none."""
    per = per_elem.reshape(per_elem.shape[0], -1).mean(dim=1) if per_elem.dim() > 1 else per_elem
    if weight is not None:
        per = per * t64(weight)
    if reduction == "none":
        return per
    return per.sum() / (per.shape[0] if reduction == "mean" else 1)


def compare_loss(ours_fn, torch_elem_fn, pred, weight, reduction):
    p = Tensor(pred, requires_grad=True)
    pt = t64(pred, grad=True)
    out = ours_fn(p)
    ref = reduce_like_ours(torch_elem_fn(pt), weight, reduction)
    close(out.data, ref, rtol=1e-10, atol=1e-12)
    g = np.random.default_rng(0).uniform(0.5, 1.5, ref.shape)
    out.backward(g)
    ref.backward(torch.from_numpy(g))
    close(p.grad, pt.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weight", [None, W], ids=["unweighted", "weighted"])
def test_regression_losses(reduction, weight):
    tt = t64(TARGET)
    kw = {"reduction": reduction, "sample_weight": weight}
    compare_loss(
        lambda p: losses.mse(p, TARGET, **kw),
        lambda p: F.mse_loss(p, tt, reduction="none"),
        PRED,
        weight,
        reduction,
    )
    compare_loss(
        lambda p: losses.mae(p, TARGET, **kw),
        lambda p: F.l1_loss(p, tt, reduction="none"),
        PRED,
        weight,
        reduction,
    )
    compare_loss(
        lambda p: losses.huber(p, TARGET, delta=0.8, **kw),
        lambda p: F.huber_loss(p, tt, delta=0.8, reduction="none"),
        PRED,
        weight,
        reduction,
    )


def test_plain_means_equal_torch_reductions():
    p, tt = Tensor(PRED), t64(TARGET)
    close(losses.mse(p, TARGET).data, F.mse_loss(t64(PRED), tt), rtol=1e-12)
    close(losses.mae(p, TARGET).data, F.l1_loss(t64(PRED), tt), rtol=1e-12)
    # "sum" adds per-sample losses (each a mean over the non-batch axes), as Keras does
    col = Tensor(PRED[:, :1])
    ref = F.l1_loss(t64(PRED[:, :1]), tt[:, :1], reduction="sum")
    close(losses.mae(col, TARGET[:, :1], reduction="sum").data, ref, rtol=1e-12)
    close(losses.huber(p, TARGET, delta=1.5).data, F.huber_loss(t64(PRED), tt, delta=1.5))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("pos_weight", [None, 2.5])
@pytest.mark.parametrize("weight", [None, W], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("shape", [(N,), (N, 1), (N, 3)])
def test_bce_with_logits(reduction, pos_weight, weight, shape):
    z = 3 * np.random.default_rng(6).standard_normal(shape)
    y = (np.random.default_rng(7).random(shape) > 0.4).astype(np.float64)
    if shape == (N, 3):
        y[:, 2] = 0.3  # soft targets work too
    pw = None if pos_weight is None else torch.tensor([pos_weight], dtype=torch.float64)
    compare_loss(
        lambda p: losses.binary_cross_entropy_with_logits(
            p, y, pos_weight=pos_weight, sample_weight=weight, reduction=reduction
        ),
        lambda p: F.binary_cross_entropy_with_logits(p, t64(y), pos_weight=pw, reduction="none"),
        z,
        weight,
        reduction,
    )


def test_bce_with_a_pos_weight_per_class():
    z = np.random.default_rng(6).standard_normal((N, 3))
    y = (np.random.default_rng(7).random((N, 3)) > 0.5).astype(np.float64)
    pw = np.array([1.0, 2.0, 4.0])
    compare_loss(
        lambda p: losses.binary_cross_entropy_with_logits(p, y, pos_weight=pw),
        lambda p: F.binary_cross_entropy_with_logits(
            p, t64(y), pos_weight=t64(pw), reduction="none"
        ),
        z,
        None,
        "mean",
    )


def test_bce_mean_equals_torch_weighted_mean():
    z = np.random.default_rng(6).standard_normal((N, 1))
    y = (np.random.default_rng(7).random((N, 1)) > 0.5).astype(np.float64)
    ours = losses.binary_cross_entropy_with_logits(Tensor(z), y, pos_weight=3.0, sample_weight=W)
    ref = F.binary_cross_entropy_with_logits(
        t64(z), t64(y), weight=t64(W[:, None]), pos_weight=torch.tensor([3.0], dtype=torch.float64)
    )
    close(ours.data, ref, rtol=1e-12)


def test_bce_extreme_logits_are_finite():
    z = np.array([-800.0, -30.0, 0.0, 30.0, 800.0])
    y = np.array([1.0, 1.0, 0.0, 0.0, 0.0])
    compare_loss(
        lambda p: losses.binary_cross_entropy_with_logits(p, y, reduction="none"),
        lambda p: F.binary_cross_entropy_with_logits(p, t64(y), reduction="none"),
        z,
        None,
        "none",
    )


LOGITS = 2 * R.standard_normal((N, 4))
LABELS = R.integers(0, 4, N)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.15])
@pytest.mark.parametrize("target", ["labels", "onehot", "soft"])
@pytest.mark.parametrize("weight", [None, W], ids=["unweighted", "weighted"])
def test_cross_entropy(reduction, smoothing, target, weight):
    if target == "labels":
        ours_t, torch_t = LABELS, torch.from_numpy(LABELS)
    elif target == "onehot":
        ours_t = np.eye(4)[LABELS]
        torch_t = t64(ours_t)
    else:
        ours_t = np.random.default_rng(3).dirichlet(np.ones(4), N)
        torch_t = t64(ours_t)
    compare_loss(
        lambda p: losses.cross_entropy(
            p, ours_t, label_smoothing=smoothing, sample_weight=weight, reduction=reduction
        ),
        lambda p: F.cross_entropy(p, torch_t, label_smoothing=smoothing, reduction="none"),
        LOGITS,
        weight,
        reduction,
    )


def test_cross_entropy_mean_equals_torch():
    ours = losses.cross_entropy(Tensor(LOGITS), LABELS, label_smoothing=0.1)
    ref = F.cross_entropy(t64(LOGITS), torch.from_numpy(LABELS), label_smoothing=0.1)
    close(ours.data, ref, rtol=1e-12)


def test_activations_and_softmax():
    x = 3 * np.random.default_rng(4).standard_normal((6, 5))
    t = Tensor(x)
    tt = t64(x)
    close(t.gelu().data, F.gelu(tt, approximate="tanh"), rtol=1e-12, atol=1e-15)
    close(t.sigmoid().data, torch.sigmoid(tt), rtol=1e-12)
    close(t.softmax(axis=0).data, torch.softmax(tt, dim=0), rtol=1e-12)
    close(t.log_softmax().data, torch.log_softmax(tt, dim=-1), rtol=1e-12)


# -- schedules, clipping ---------------------------------------------------------------------------


def _torch_opt(lr):
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)


def _torch_lrs(sched, opt, n):
    out = []
    for _ in range(n):
        opt.step()
        sched.step()
        out.append(opt.param_groups[0]["lr"])
    return out


def _our_lrs(sched, n):
    return [sched.step() for _ in range(n)]


def _our_opt(lr):
    return optim.SGD([Parameter(np.zeros(1))], lr=lr)


def test_step_lr():
    to = _torch_opt(0.3)
    ref = _torch_lrs(torch.optim.lr_scheduler.StepLR(to, step_size=3, gamma=0.2), to, 10)
    close(_our_lrs(optim.StepLR(_our_opt(0.3), step_size=3, gamma=0.2), 10), ref, rtol=1e-12)


def test_exponential_lr():
    to = _torch_opt(0.3)
    ref = _torch_lrs(torch.optim.lr_scheduler.ExponentialLR(to, gamma=0.8), to, 10)
    close(_our_lrs(optim.ExponentialLR(_our_opt(0.3), gamma=0.8), 10), ref, rtol=1e-12)


def test_cosine_annealing_lr():
    to = _torch_opt(0.3)
    ref = _torch_lrs(torch.optim.lr_scheduler.CosineAnnealingLR(to, T_max=8, eta_min=0.01), to, 8)
    ours = _our_lrs(optim.CosineAnnealingLR(_our_opt(0.3), t_max=8, eta_min=0.01), 8)
    close(ours, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_grad_norm(norm_type, max_norm):
    r = np.random.default_rng(8)
    grads = [r.standard_normal((4, 3)), r.standard_normal(5)]
    ours = [Parameter(np.zeros_like(g)) for g in grads]
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, tp, g in zip(ours, theirs, grads):
        p.grad = g.copy()
        tp.grad = t64(g)
    total = optim.clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    ref = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    close(total, ref, rtol=1e-12)
    for p, tp in zip(ours, theirs):
        close(p.grad, tp.grad, rtol=1e-12)


def test_clip_grad_value():
    g = 2 * np.random.default_rng(9).standard_normal(10)
    p = Parameter(np.zeros(10))
    p.grad = g.copy()
    tp = torch.zeros(10, dtype=torch.float64, requires_grad=True)
    tp.grad = t64(g)
    optim.clip_grad_value_([p], 0.7)
    torch.nn.utils.clip_grad_value_([tp], 0.7)
    close(p.grad, tp.grad, rtol=0, atol=0)
