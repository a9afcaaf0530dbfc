"""Imported ONNX models: lepton_nn's runtime against ONNX Runtime on the same file, 1 thread.

    python -m pytest benchmarks/bench_onnx.py --benchmark-only --benchmark-group-by=group
    python benchmarks/bench_onnx.py          # a table of ratios (ORT time / ours), and load

Models (PyTorch, exported with ``torch.onnx.export``): an MLP 784-512-256-10, an LSTM(64)
over 32 steps of 16 features with a Dense head, a CNN (two conv + BatchNorm + ReLU + pool
blocks on 1x28x28). Batches 1 and 64. The first prediction of a converted ``.lnn`` in a
fresh process (import, load, predict) is timed too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
nn = torch.nn

BATCHES = (1, 64)


class _LSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.fc = nn.LSTM(16, 64, batch_first=True), nn.Linear(64, 5)

    def forward(self, x):
        return self.fc(self.rnn(x)[1][0][-1])


def _models():
    torch.manual_seed(0)
    block = lambda c, f: [nn.Conv2d(c, f, 3, padding=1), nn.BatchNorm2d(f), nn.ReLU(),  # noqa: E731
                          nn.MaxPool2d(2)]  # fmt: skip
    return {
        "mlp": (nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                              nn.Linear(256, 10)), (784,)),
        "lstm": (_LSTM(), (32, 16)),
        "cnn": (nn.Sequential(*block(1, 16), *block(16, 32), nn.Flatten(),
                              nn.Linear(32 * 7 * 7, 10)), (1, 28, 28)),
    }  # fmt: skip


def export_all(folder: str) -> dict[str, tuple[str, tuple]]:
    out = {}
    for name, (model, shape) in _models().items():
        path = os.path.join(folder, f"{name}.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.eval(), (torch.randn(2, *shape),), path, dynamo=False,
                              input_names=["x"], dynamic_axes={"x": {0: "n"}},
                              opset_version=17)  # fmt: skip
        out[name] = (path, shape)
    return out


def engines(path: str):
    from lepton_nn import runtime

    ours = runtime.load(path, threads=1)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return {"lepton_nn runtime": ours.predict,
            "onnxruntime": lambda x: session.run(None, {"x": x})[0]}  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return export_all(str(tmp_path_factory.mktemp("onnx")))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("model", ["mlp", "lstm", "cnn"])
@pytest.mark.parametrize("engine", ["lepton_nn runtime", "onnxruntime"])
def test_imported_inference(benchmark, files, model, batch, engine):
    from lepton_nn.backend.threads import blas_held

    path, shape = files[model]
    fn = engines(path)[engine]
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    benchmark.group = f"imported {model}, batch {batch}, 1 thread"
    with blas_held():
        fn(x)
        benchmark(fn, x)


def _best(fn, x, seconds=0.5) -> float:
    fn(x)
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for _ in range(5):
            fn(x)
        best = min(best, (time.perf_counter() - t0) / 5)
    return best


def main() -> None:
    from lepton_nn.backend.threads import blas_held
    from lepton_nn.onnx import convert

    with tempfile.TemporaryDirectory() as folder:
        print("model  batch  ours (us)  ORT (us)  ORT/ours")
        for name, (path, shape) in export_all(folder).items():
            eng = engines(path)
            for n in BATCHES:
                x = np.random.default_rng(0).standard_normal((n, *shape)).astype(np.float32)
                with blas_held():
                    t = {k: _best(f, x) for k, f in eng.items()}
                ours, theirs = t["lepton_nn runtime"], t["onnxruntime"]
                print(f"{name:5s}  {n:5d}  {ours * 1e6:9.1f}  {theirs * 1e6:8.1f}  "
                      f"{theirs / ours:8.2f}")  # fmt: skip
            lnn = os.path.join(folder, f"{name}.lnn")
            convert(path, lnn)
            code = ("import time; t0 = time.perf_counter(); import numpy as np; "
                    f"import lepton_nn.runtime as rt; m = rt.load({lnn!r}); "
                    "m.predict(np.zeros((1, *m.input_shape[1:]), np.float32)); "
                    "print(time.perf_counter() - t0)")  # fmt: skip
            root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            env = {**os.environ, "PYTHONPATH": root}
            runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                         text=True, env=env, check=True).stdout)
                    for _ in range(3)]  # fmt: skip
            print(f"{name}: import + load of the .lnn + first prediction: {min(runs):.3f} s")


if __name__ == "__main__":
    main()
