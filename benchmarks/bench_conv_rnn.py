"""W3 CNN and W4 LSTM training steps: lepton_nn against PyTorch and TensorFlow.

    python -m pytest benchmarks/bench_conv_rnn.py --benchmark-columns=median,ops \
        --benchmark-group-by=group

W3: input (64, 1, 28, 28) -> Conv 3x3 16 same, ReLU -> MaxPool 2 -> Conv 3x3 32 same, ReLU
    -> MaxPool 2 -> Flatten -> Dense 10; softmax cross-entropy; Adam. Batch 64.
W4: input (32, 50, 8) -> LSTM 64 (last state) -> Dense 10; softmax cross-entropy; Adam.
One "step" is forward, loss, backward and the optimizer update. Every engine is pinned to
``LEPTON_BENCH_THREADS`` threads (default 1): BLAS pools through threadpoolctl, torch with
``set_num_threads``, TensorFlow with its intra/inter-op settings. TensorFlow runs NHWC (its
CPU convolution layout) inside a compiled ``tf.function`` step. samples/s = batch / median
is stored in each result's extra_info; peers are skipped when not installed.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")

THREADS = int(os.environ.get("LEPTON_BENCH_THREADS", "1"))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))

try:  # pin the BLAS pools already loaded (NumPy's OpenBLAS) to THREADS
    from threadpoolctl import threadpool_limits

    _LIMIT = threadpool_limits(limits=THREADS)
except ImportError:  # pragma: no cover
    _LIMIT = None

W3, W4 = "W3 CNN training step", "W4 LSTM training step"
BATCH = {W3: 64, W4: 32}


def _data(workload):
    rng = np.random.default_rng(0)
    if workload == W3:
        x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    else:
        x = rng.standard_normal((32, 50, 8)).astype(np.float32)
    return x, rng.integers(0, 10, len(x))


# -- engines: each returns a zero-argument training step -------------------------------------------


def lepton_step(workload, backend):
    import lepton_nn as ln
    from lepton_nn import Tensor, losses
    from lepton_nn.backend import use_backend
    from lepton_nn.nn import LSTM, Conv2D, Dense, Flatten, MaxPool2D, Sequential
    from lepton_nn.optim import Adam

    ln.set_seed(0)
    x, y = _data(workload)
    if workload == W3:
        layers = [
            Conv2D(16, 3, padding="same", activation="relu"),
            MaxPool2D(2),
            Conv2D(32, 3, padding="same", activation="relu"),
            MaxPool2D(2),
            Flatten(),
            Dense(10),
        ]
    else:
        layers = [LSTM(64), Dense(10)]
    model = Sequential(layers).build((None, *x.shape[1:]))
    opt = Adam(model.parameters(), lr=1e-3)
    xt = Tensor(x)

    def step():
        with use_backend(backend):  # per step: engines may be interleaved in one process
            loss = losses.cross_entropy(model(xt), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return step


def torch_step(workload):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    nn = torch.nn
    x, y = _data(workload)
    if workload == W3:
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 10),
        )
    else:

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.lstm, self.head = nn.LSTM(8, 64, batch_first=True), nn.Linear(64, 10)

            def forward(self, v):
                return self.head(self.lstm(v)[1][0][0])

        model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.tensor(x), torch.tensor(y)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        loss = loss_fn(model(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def tensorflow_step(workload):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = pytest.importorskip("tensorflow")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(THREADS)
    except RuntimeError:  # the runtime already started in this process
        pass
    keras = tf.keras
    tf.random.set_seed(0)
    x, y = _data(workload)
    if workload == W3:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # NHWC: TF's CPU conv layout
        model = keras.Sequential(
            [
                keras.Input(x.shape[1:]),
                keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
                keras.layers.MaxPooling2D(2),
                keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
                keras.layers.MaxPooling2D(2),
                keras.layers.Flatten(),
                keras.layers.Dense(10),
            ]
        )
    else:
        model = keras.Sequential(
            [keras.Input(x.shape[1:]), keras.layers.LSTM(64), keras.layers.Dense(10)]
        )
    opt = keras.optimizers.Adam(1e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    xt, yt = tf.constant(x), tf.constant(y)

    @tf.function
    def train_step(a, b):
        with tf.GradientTape() as tape:
            loss = loss_fn(b, model(a, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return lambda: train_step(xt, yt).numpy()


def _engines():
    from lepton_nn.backend import available

    have = [b for b in available() if b != "numba"]  # numba: seconds of first-call compile
    return [*dict.fromkeys([f"lepton:{have[0]}", "lepton:reference"]), "torch", "tensorflow"]


@pytest.mark.parametrize("workload", [W3, W4])
@pytest.mark.parametrize("engine", _engines())
def test_training_step(benchmark, engine, workload):
    if engine.startswith("lepton:"):
        step = lepton_step(workload, engine.partition(":")[2])
    else:
        step = {"torch": torch_step, "tensorflow": tensorflow_step}[engine](workload)
    for _ in range(3):  # warm up: graph tracing, first-call allocations
        step()
    benchmark.group = f"{workload} ({THREADS} thread{'s' if THREADS > 1 else ''})"
    benchmark.pedantic(step, rounds=5 if benchmark.disabled else 30, iterations=1)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        benchmark.extra_info["samples/s"] = round(BATCH[workload] / stats.stats.median)


def side_by_side(workloads=(W3, W4), rounds: int = 30) -> None:
    """Interleaved rounds (one step of each engine in turn), medians: fair under a noisy load."""
    import time

    for workload in workloads:
        steps = {}
        for engine in _engines():
            try:
                if engine.startswith("lepton:"):
                    steps[engine] = lepton_step(workload, engine.partition(":")[2])
                else:
                    steps[engine] = {"torch": torch_step, "tensorflow": tensorflow_step}[engine](
                        workload
                    )
            except pytest.skip.Exception:
                continue
            for _ in range(3):
                steps[engine]()
        times = {e: [] for e in steps}
        for _ in range(rounds):
            for e, step in steps.items():
                t = time.perf_counter()
                step()
                times[e].append(time.perf_counter() - t)
        print(f"\n{workload}, batch {BATCH[workload]}, {THREADS} thread(s), median of {rounds}")
        med = {e: float(np.median(v)) for e, v in times.items()}
        for e, m in med.items():
            ratios = "  ".join(
                f"{BATCH[workload] / m / (BATCH[workload] / med[p]):5.2f}x {p}"
                for p in ("torch", "tensorflow")
                if p in med and p != e
            )
            print(f"  {e:18s} {m * 1e3:8.2f} ms  {BATCH[workload] / m:8.0f} samples/s  {ratios}")


if __name__ == "__main__":
    side_by_side()
