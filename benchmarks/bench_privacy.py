"""DP-SGD step cost on W1 (32 -> 64 -> 32 -> 1, batch 64, Adam, BCE) and a small CNN: a plain
step, a DP step with ghost norms, a DP step with every per-example gradient formed; Opacus
beside W1 (its per-example hooks and its ghost clipping) and a plain PyTorch step, where
installed.

    python -m pytest benchmarks/bench_privacy.py --benchmark-only     # pytest-benchmark
    python benchmarks/bench_privacy.py                                # a table with ratios

One call is one training step (forward, backward, clip, noise, optimizer step) on a fixed
batch of 64 rows (the Poisson sampling itself is not timed).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from lepton_nn import losses, nn, optim
from lepton_nn.privacy import make_private
from lepton_nn.privacy.grad_sample import GradSampler
from lepton_nn.random import set_seed

N, F, BATCH = 2048, 32, 64


def _data():
    r = np.random.default_rng(0)
    x = r.normal(size=(N, F)).astype(np.float32)
    y = (x[:, :4].sum(axis=1, keepdims=True) > 0).astype(np.float32)
    return x, y


def lepton_step(mode: str):
    """A step function for ``plain``, ``dp-ghost`` or ``dp-materialised``."""
    set_seed(0)
    x, y = _data()
    xb, yb = x[:BATCH], y[:BATCH]
    m = nn.Sequential([nn.Dense(64, "relu", in_features=F), nn.Dense(32, "relu"), nn.Dense(1)])
    m.build((None, F))
    opt = optim.Adam(m.parameters(), lr=1e-3)
    if mode != "plain":
        priv = make_private(m, opt, (x, y), batch_size=BATCH, epochs=1, noise_multiplier=1.0)
        if mode == "dp-materialised":
            priv.sampler.detach()
            priv.sampler = priv.optimizer.sampler = GradSampler(m, ghost=False).attach()
        opt = priv.optimizer

    def step():
        loss = losses.binary_cross_entropy_with_logits(m(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def lepton_conv_step(mode: str):
    """The same three modes on a small CNN (32x8x8 inputs, two 3x3 convolutions of 64
    filters, a dense head; batch 64, cross-entropy): conv ghost norms (Gram matrices of the
    6x6 and 4x4 output positions) against every per-example gradient formed."""
    set_seed(0)
    r = np.random.default_rng(0)
    x = r.normal(size=(512, 32, 8, 8)).astype(np.float32)
    y = r.integers(0, 10, 512)
    m = nn.Sequential([
        nn.Conv2D(64, 3, in_channels=32, activation="relu"),
        nn.Conv2D(64, 3, activation="relu"),
        nn.Flatten(),
        nn.Dense(10),
    ])  # fmt: skip
    m.build((None, 32, 8, 8))
    opt = optim.Adam(m.parameters(), lr=1e-3)
    if mode != "plain":
        priv = make_private(m, opt, (x, y), batch_size=BATCH, epochs=1, noise_multiplier=1.0)
        if mode == "dp-materialised":
            priv.sampler.detach()
            priv.sampler = priv.optimizer.sampler = GradSampler(m, ghost=False).attach()
        opt = priv.optimizer
    xb, yb = x[:BATCH], y[:BATCH]

    def step():
        loss = losses.cross_entropy(m(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def torch_step(mode: str):
    """``torch`` (plain), ``opacus-hooks`` or ``opacus-ghost``; None when not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    torch.set_num_threads(1)  # small work on shared cores: one thread, as lepton_nn runs it
    x, y = (torch.from_numpy(a) for a in _data())
    model = torch.nn.Sequential(
        torch.nn.Linear(F, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
        torch.nn.Linear(32, 1),
    )  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    crit = torch.nn.BCEWithLogitsLoss()
    xb, yb = x[:BATCH], y[:BATCH]
    if mode != "torch":
        try:
            from opacus import PrivacyEngine
        except ImportError:
            return None
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)
        engine = PrivacyEngine()
        kw = dict(noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=False)
        if mode == "opacus-ghost":
            model, opt, crit, _ = engine.make_private(
                module=model, optimizer=opt, data_loader=loader, criterion=crit,
                grad_sample_mode="ghost", **kw,
            )  # fmt: skip
        else:
            model, opt, _ = engine.make_private(
                module=model, optimizer=opt, data_loader=loader, **kw
            )

    def step():
        opt.zero_grad()
        loss = crit(model(xb), yb)
        loss.backward()
        opt.step()

    return step


CASES = {
    "lepton plain": lambda: lepton_step("plain"),
    "lepton DP ghost": lambda: lepton_step("dp-ghost"),
    "lepton DP materialised": lambda: lepton_step("dp-materialised"),
    "lepton CNN plain": lambda: lepton_conv_step("plain"),
    "lepton CNN DP ghost": lambda: lepton_conv_step("dp-ghost"),
    "lepton CNN DP materialised": lambda: lepton_conv_step("dp-materialised"),
    "torch plain": lambda: torch_step("torch"),
    "opacus hooks": lambda: torch_step("opacus-hooks"),
    "opacus ghost": lambda: torch_step("opacus-ghost"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_dp_step(benchmark, name):
    pytest.importorskip("pytest_benchmark")
    step = CASES[name]()
    if step is None:
        pytest.skip(f"{name}: not installed")
    step()
    benchmark(step)


def _median_us(step, rounds: int = 7, inner: int = 100) -> tuple[float, float]:
    """(wall, CPU) median microseconds per step. The CPU time of this process is the
    steadier figure on a shared machine (time the scheduler gave others is not counted);
    every case runs its math on one thread, so the two agree on an idle one."""
    step()
    wall, cpu = [], []
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(inner):
            step()
        wall.append((time.perf_counter() - t0) / inner)
        cpu.append((time.process_time() - c0) / inner)
    return float(np.median(wall)) * 1e6, float(np.median(cpu)) * 1e6


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")
    steps = {name: make() for name, make in CASES.items()}
    res: dict[str, list] = {}
    # rounds interleaved within each engine and model (a busy neighbour hits every case
    # alike), the groups apart: threads one engine wakes (PyTorch's, the CNN's pool, BLAS)
    # spin on for a while and would be charged to the next case's CPU time
    groups = [[n for n in steps if n.startswith("lepton") and "CNN" not in n]]
    groups += [[n for n in steps if n.startswith(("torch", "opacus"))]]
    groups += [[n for n in steps if "CNN" in n]]
    for group in groups:
        for _ in range(5):
            for name in group:
                step = steps[name]
                if step is None:
                    continue
                t0 = time.perf_counter()
                step()
                inner = max(3, min(50, int(0.1 / (time.perf_counter() - t0))))  # ~0.1 s
                res.setdefault(name, []).append(_median_us(step, rounds=3, inner=inner))
    med = {k: np.median(np.array(v), axis=0) for k, v in res.items()}
    print(f"step at batch {BATCH}: median us (wall, CPU); ratio to the same model's plain step")
    for name, (wall, cpu) in med.items():
        base = med["lepton CNN plain"] if "CNN" in name else med["lepton plain"]
        if name.startswith(("torch", "opacus")):
            base = med["torch plain"]
        print(
            f"  {name:24s} wall {wall:8.1f} us  x{wall / base[0]:.2f}   "
            f"CPU {cpu:8.1f} us  x{cpu / base[1]:.2f}"
        )
