"""A membership-inference sanity check: a loss-threshold attack tells training rows from
held-out rows well against a model that memorized random labels, and barely against the
same model trained with DP-SGD at small epsilon."""

from __future__ import annotations

import numpy as np

from lepton_nn import losses, nn, optim
from lepton_nn.privacy import make_private
from lepton_nn.random import set_seed


def _advantage(loss_in: np.ndarray, loss_out: np.ndarray) -> float:
    """max over thresholds of TPR - FPR for 'member if loss <= threshold'."""
    best = 0.0
    for t in np.concatenate([loss_in, loss_out]):
        best = max(best, np.mean(loss_in <= t) - np.mean(loss_out <= t))
    return float(best)


def _per_row_loss(model, x, y) -> np.ndarray:
    model.eval()
    out = model(x)
    return losses.binary_cross_entropy_with_logits(out, y, reduction="none").data


def _attack(epsilon_target: float | None) -> float:
    r = np.random.default_rng(0)
    x = r.normal(size=(400, 10))
    y = r.integers(0, 2, (400, 1)).astype(np.float64)  # random labels: only memory helps
    xi, yi, xo, yo = x[:200], y[:200], x[200:], y[200:]
    set_seed(1)
    m = nn.Sequential([nn.Dense(128, "relu", in_features=10), nn.Dense(1, in_features=128)])
    m.astype("float64")
    opt = optim.Adam(m.parameters(), lr=0.01)
    if epsilon_target is None:
        for _ in range(400):
            loss = losses.binary_cross_entropy_with_logits(m(xi), yi)
            opt.zero_grad()
            loss.backward()
            opt.step()
    else:
        priv = make_private(m, opt, (xi, yi), batch_size=50, epochs=40,
                            target_epsilon=epsilon_target, max_grad_norm=1.0, seed=2)  # fmt: skip
        for _ in range(40):
            for xb, yb in priv.loader:
                loss = losses.binary_cross_entropy_with_logits(m(xb), yb)
                priv.optimizer.zero_grad()
                loss.backward()
                priv.optimizer.step()
        priv.detach()
    return _advantage(_per_row_loss(m, xi, yi), _per_row_loss(m, xo, yo))


def test_loss_threshold_attack_advantage_shrinks_with_epsilon():
    plain, eps8, eps1 = _attack(None), _attack(8.0), _attack(1.0)
    assert plain > 0.6  # memorized: training rows have visibly smaller losses
    assert eps1 < 0.2  # about what two samples of 200 differ by chance (KS 95 %: 0.136)
    assert eps1 < eps8 < plain
    # the DP bound on any attack's advantage: (e^eps - 1 + 2 delta) / (e^eps + 1)
    assert eps1 <= (np.e - 1 + 2e-5) / (np.e + 1)
