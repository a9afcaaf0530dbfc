"""Regression guard on what ``import lepton_nn.runtime`` imports (a list, not a time).

Cold start (import + load + first prediction in a fresh process) is a target of the runtime;
every module imported at import time is paid by every process that serves a model. Modules
NumPy imports itself are not counted. A new import here must be justified: make it lazy
(inside the function that needs it) or add it to the sets below on purpose.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# exactly the package's own modules `import lepton_nn.runtime` may load
LEPTON = {
    "lepton_nn",
    "lepton_nn._cpu",
    "lepton_nn.backend",
    "lepton_nn.backend.activations",
    "lepton_nn.backend.geometry",
    "lepton_nn.backend.padding",
    "lepton_nn.backend.reference",
    "lepton_nn.backend.reference_common",
    "lepton_nn.backend.reference_conv",
    "lepton_nn.backend.reference_dense",
    "lepton_nn.backend.reference_int8",
    "lepton_nn.backend.reference_recurrent",
    "lepton_nn.backend.threads",
    "lepton_nn.errors",
    "lepton_nn.runtime",
    "lepton_nn.runtime.aliasing",
    "lepton_nn.runtime.compression",
    "lepton_nn.runtime.format",
    "lepton_nn.runtime.format_common",
    "lepton_nn.runtime.format_read",
    "lepton_nn.runtime.format_write",
    "lepton_nn.runtime.graph",
    "lepton_nn.runtime.kernels",
    "lepton_nn.runtime.model",
    "lepton_nn.runtime.npy_header",
    "lepton_nn.runtime.onecall",
    "lepton_nn.runtime.parsers",
    "lepton_nn.runtime.plan",
    "lepton_nn.runtime.preprocess",
    "lepton_nn.runtime.record",
    "lepton_nn.runtime.shapes",
    "lepton_nn.runtime.steps",
    "lepton_nn.runtime.steps_dense",
    "lepton_nn.runtime.validate",
}
# top-level standard-library packages it may add to NumPy's (loading a file needs zip, JSON,
# SHA-256; their own dependencies are listed too). Private C modules ("_json") are not counted.
STDLIB = {
    "__future__", "binascii", "bisect", "bz2", "collections", "contextlib", "copy",
    "errno", "fnmatch", "functools", "hashlib", "importlib", "io", "ipaddress",
    "itertools", "json", "lzma", "ntpath", "pathlib", "posixpath", "shutil", "stat", "struct",
    "threading", "urllib", "zipfile", "zlib",
}  # fmt: skip
# the steps of convolutions, recurrent and interchange layers: imported when a model has some
LAYER_STEPS = {
    "lepton_nn.runtime.steps_conv", "lepton_nn.runtime.steps_extra",
    "lepton_nn.runtime.steps_recurrent",
}  # fmt: skip
# never at import: training, layers, JIT, converters, optional extras, saving
FORBIDDEN = {
    "lepton_nn.autograd", "lepton_nn.nn", "lepton_nn.ops", "lepton_nn.optim", "lepton_nn.train",
    "lepton_nn.onnx", "lepton_nn.backend.numba_backend", "numba", "onnx", "onnxruntime",
    "torch", "cryptography", "scipy", "tempfile", "random", "pickle", "inspect",
    "dataclasses",  # compiles each class's methods at import (lepton_nn/runtime/record.py)
}  # fmt: skip

_PROBE = (
    "import json, sys\n"
    "import numpy\n"
    "before = set(sys.modules)\n"
    "import lepton_nn.runtime\n"
    "print(json.dumps(sorted(set(sys.modules) - before)))\n"
)


def _imported() -> list[str]:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, cwd=ROOT, env=env,
        check=True, timeout=120,
    )  # fmt: skip
    return json.loads(out.stdout)


def test_import_runtime_loads_only_the_listed_modules() -> None:
    new = _imported()
    ours = {m for m in new if m == "lepton_nn" or m.startswith("lepton_nn.")}
    others = {m.split(".")[0] for m in new if m not in ours}
    assert ours <= LEPTON, f"new lepton_nn modules at import: {sorted(ours - LEPTON)}"
    unexpected = {m for m in others if not m.startswith("_")} - STDLIB
    assert not unexpected, f"unexpected modules at import: {sorted(unexpected)}"
    hit = {m for m in new if m in FORBIDDEN or m.split(".")[0] in FORBIDDEN}
    assert not hit, f"forbidden at import of lepton_nn.runtime: {sorted(hit)}"
    assert len(new) <= len(LEPTON) + 40, f"{len(new)} modules imported: {new}"


_LOAD_PROBE = (
    "import json, sys\n"
    "import numpy as np\n"
    "import lepton_nn.runtime as rt\n"
    "before = set(sys.modules)\n"
    "m = rt.load(sys.argv[1])\n"
    "m.predict(np.full((1, 5, 3), 0.5, np.float32))\n"
    "print(json.dumps(sorted(set(sys.modules) - before)))\n"
)


def test_load_and_first_prediction_import_no_heavy_module(tmp_path) -> None:
    """Loading a recurrent model and predicting once (the compiled kernels' first-use GEMM
    check included) imports neither numpy.random nor anything of training or saving."""
    from lepton_nn import io, nn, no_grad

    model = nn.Sequential([nn.LSTM(4, input_size=3), nn.Dense(2, None, in_features=4)])
    with no_grad():
        model(np.zeros((1, 5, 3), np.float32))
    path = str(tmp_path / "lstm.lnn")
    io.save(model, path)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-c", _LOAD_PROBE, path], capture_output=True, text=True, cwd=ROOT,
        env=env, check=True, timeout=120,
    )  # fmt: skip
    new = json.loads(out.stdout)
    heavy = {"numpy.random", *FORBIDDEN}
    hit = {m for m in new if m in heavy or m.split(".")[0] in heavy}
    assert not hit, f"imported by load + first prediction: {sorted(hit)}"


def test_load_walks_the_layers_and_parses_the_preprocessing_once(tmp_path, monkeypatch) -> None:
    """Nothing computed twice at load: the validator's walk of the layers (run on the
    manifest before any array is read) and its parse of the preprocessing are what the
    model is built from. Every check still runs (the damaged-file tests cover them)."""
    from lepton_nn.runtime import model as rt_model
    from lepton_nn.runtime import plan, preprocess, validate
    from lepton_nn.runtime.format import write_lnn
    from lepton_nn.tabular import TabularModel

    x = np.random.default_rng(0).standard_normal((40, 2))
    cols = {"a": x[:, 0], "b": x[:, 1], "c": np.where(x[:, 0] > 1, "u", "v")}
    tab = TabularModel(hidden=(3,), epochs=1, seed=0, validation_split=0.0)
    manifest, arrays = tab.fit(cols, np.where(x[:, 1] > 0, "yes", "no")).to_lnn()
    path = tmp_path / "tab.lnn"
    write_lnn(path, manifest, arrays)

    calls = {"walk": 0, "parse": 0}
    walk, parse = validate.validate_network, preprocess.Preprocessing.from_config.__func__

    def counted_walk(*a, **k):
        calls["walk"] += 1
        return walk(*a, **k)

    def counted_parse(cls, *a, **k):
        calls["parse"] += 1
        return parse(cls, *a, **k)

    monkeypatch.setattr(validate, "validate_network", counted_walk)
    monkeypatch.setattr(plan, "validate_network", counted_walk)
    monkeypatch.setattr(preprocess.Preprocessing, "from_config", classmethod(counted_parse))
    model = rt_model.load(path)
    assert calls == {"walk": 1, "parse": 1}
    assert model.predict({"a": [0.1], "b": [0.2], "c": ["u"]}).shape == (1,)


_KERNELS_PROBE = (
    "import json, sys\n"
    "import numpy as np\n"
    "import lepton_nn.runtime as rt\n"
    "m = rt.load(sys.argv[1])\n"
    "m.predict(np.full(json.loads(sys.argv[2]), 0.5, np.float32))\n"
    "print(json.dumps(sorted(k for k in sys.modules if k.startswith('lepton_nn.'))))\n"
)
_EXTENSIONS = {f"lepton_nn.kernels._{n}" for n in ("conv", "recurrent", "qgemm", "sparse", "gemm")}


@pytest.mark.parametrize(
    "kind, needs",
    [("mlp", set()), ("lstm", {"lepton_nn.kernels._recurrent"}),
     ("cnn", {"lepton_nn.kernels._conv"})],
)  # fmt: skip
def test_load_and_predict_import_only_the_kernel_modules_the_plan_runs(tmp_path, kind, needs):
    """The compiled backend imports each extension at the first use of one of its kernels:
    serving an MLP loads the dense one (and the pool it binds), never the conv, recurrent,
    int8, sparse or training-GEMM ones; an LSTM adds the recurrent one, a CNN the conv one.
    The tabular preprocessing is imported for tabular files only."""
    pytest.importorskip("lepton_nn.kernels._dense")
    from lepton_nn import io, nn, no_grad

    layers, shape = {
        "mlp": ([nn.Dense(16, "relu", in_features=8), nn.Dense(3)], (1, 8)),
        "lstm": ([nn.LSTM(4, input_size=3), nn.Dense(2, None, in_features=4)], (1, 5, 3)),
        "cnn": ([nn.Conv2D(4, 3, in_channels=2), nn.Flatten(), nn.Dense(2)], (1, 2, 6, 6)),
    }[kind]
    model = nn.Sequential(layers)
    with no_grad():
        model(np.zeros(shape, np.float32))
    path = str(tmp_path / f"{kind}.lnn")
    io.save(model, path)
    # the child imports the lepton_nn this process runs (installed, with its compiled kernels,
    # or the built source tree), not whatever the checkout's folder holds
    import lepton_nn

    home = os.path.dirname(os.path.dirname(os.path.abspath(lepton_nn.__file__)))
    env = {**os.environ, "PYTHONPATH": home + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("LEPTON_BACKEND", None)
    out = subprocess.run(
        [sys.executable, "-c", _KERNELS_PROBE, path, json.dumps(shape)], capture_output=True,
        text=True, cwd=str(tmp_path), env=env, check=True, timeout=120,
    )  # fmt: skip
    loaded = set(json.loads(out.stdout))
    assert "lepton_nn.kernels._dense" in loaded
    assert loaded & _EXTENSIONS == needs, sorted(loaded)
    # and only the step modules of its layers (a Dense-only model: none of them)
    steps = {"mlp": set(), "lstm": {"lepton_nn.runtime.steps_recurrent"},
             "cnn": {"lepton_nn.runtime.steps_conv"}}[kind]  # fmt: skip
    assert loaded & LAYER_STEPS == steps, sorted(loaded)
    assert "lepton_nn.runtime.preprocess" not in loaded  # tabular files only
