"""One validator, one budget: every defect class of issue 15 (model files), through both loaders.

Each case edits a good manifest the way a careless or hostile hand would, writes it with
``write_lnn`` (so only the content is wrong, never the container) and requires
``ModelFormatError`` from ``lepton_nn.load`` *and* ``lepton_nn.runtime.load``.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest

import lepton_nn as L
from lepton_nn import nn
from lepton_nn.errors import ModelFormatError
from lepton_nn.io import module_to_lnn
from lepton_nn.runtime import from_manifest
from lepton_nn.runtime import load as rt_load
from lepton_nn.runtime.format import read_lnn, write_lnn
from lepton_nn.runtime.validate import Limits, validate


def _both_refuse(tmp_path, manifest, arrays, match, **kw):
    path = tmp_path / "bad.lnn"
    write_lnn(path, manifest, arrays)
    with pytest.raises(ModelFormatError, match=match):
        L.load(path, **kw)
    with pytest.raises(ModelFormatError, match=match):
        rt_load(path, **kw)


def _module(layers, input_shape):
    L.set_seed(0)
    model = nn.Sequential(layers)
    model.build((None, *input_shape))
    section, arrays = module_to_lnn(model)
    return {"kind": "module", "model": section}, arrays


@pytest.fixture(scope="module")
def tabular():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 3))
    y = np.where(x[:, 0] > 0, "yes", "no")
    from lepton_nn.tabular import TabularModel

    m = TabularModel(hidden=(4,), epochs=2, seed=0, validation_split=0.0).fit(
        {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2]}, y
    )
    return m.to_lnn()


# --------------------------------------------------------------------- 1. both loaders agree


def _cnn():
    from lepton_nn.nn.conv import Conv2D, MaxPool2D

    return _module([Conv2D(2, 3), MaxPool2D(2), nn.Flatten(), nn.Dense(2)], (1, 8, 8))


def _set(path, value):
    def edit(m):
        node = m
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


ARCH = ["model", "architecture", "config", "layers"]


@pytest.mark.parametrize(
    "edit, match",
    [
        (_set([*ARCH, 1, "config", "padding"], 10**9), "padding"),
        (_set([*ARCH, 0, "config", "dilation"], [10**18, 1]), "window|dilation"),
        (_set(["model", "input_shape"], [None, 8, 8]), "needs 3 dims"),
        (_set(["model", "input_shape"], [None, 1, 8, 10**400 // 10**390]), "scratch values"),
        (_set([*ARCH, 3, "config", "units"], 10**15), "units"),
        (_set([*ARCH, 3, "config", "units"], "3"), "units"),
        (_set(["kind"], ["module"]), "kind"),
        (_set([*ARCH, 0, "config", "padding"], {"a": 1}), "padding"),
        (_set([*ARCH, 3, "config", "activation"], ["relu"]), "activation"),
        (_set([*ARCH, 3, "config", "use_bias"], 1), "use_bias"),
        (_set(["model", "dtype"], "float16"), "dtype"),
    ],
)
def test_bad_architecture_values_refused_by_both_loaders(tmp_path, edit, match):
    manifest, arrays = _cnn()
    edit(manifest)
    _both_refuse(tmp_path, manifest, arrays, match)


def test_json_integers_beyond_int64_are_refused_at_parse(tmp_path):
    manifest, arrays = _cnn()
    manifest["model"]["architecture"]["config"]["layers"][3]["config"]["units"] = 10**400
    with pytest.raises(ModelFormatError, match="out of range"):
        # write_lnn writes any Python int; reading refuses it as JSON out of range
        write_lnn(tmp_path / "big.lnn", manifest, arrays)
        read_lnn(tmp_path / "big.lnn")
    _both_refuse(tmp_path, manifest, arrays, "out of range")


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda m: m["labels"]["classes"].append("maybe"), "binary task with 3 classes"),
        (lambda m: m.update(task="multiclass"), "classes but the network gives 1"),
        (lambda m: m.update(output="probabilities"), "declared as probabilities"),
        (lambda m: m["preprocessing"]["columns"].pop(), "preprocessing gives"),
        (lambda m: m.update(threshold=2**62), "threshold"),
        (lambda m: m.update(threshold=10**300), "out of range"),
        (lambda m: m.update(threshold=[0.5]), "threshold"),
        (lambda m: m["preprocessing"]["columns"][0].update(center=10**300), "out of range"),
        (lambda m: m["preprocessing"]["columns"][0].update(center=[1.0]), "center"),
        (lambda m: m.update(target_scale=[0.0, 10**300]), "out of range"),
        (lambda m: m["labels"].update(positive="perhaps"), "positive"),
        (lambda m: m.update(task=["binary"]), "task"),
    ],
)
def test_tabular_parts_checked_against_each_other(tmp_path, tabular, edit, match):
    manifest, arrays = copy.deepcopy(tabular[0]), tabular[1]
    edit(manifest)
    _both_refuse(tmp_path, manifest, arrays, match)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.update(threshold=10**400),
        lambda m: m["preprocessing"]["columns"][0].update(center=10**400),
        lambda m: m["preprocessing"]["columns"][0].update(scale=-(10**400)),
        lambda m: m.update(target_scale=[10**400, 1.0]),
        lambda m: m["model"].update(input_shape=[None, 10**400]),
        lambda m: m.update(kind={"module": 1}),
    ],
)
def test_in_memory_manifests_with_unbounded_values(tabular, edit):
    """from_manifest skips the JSON parser: the validator itself must refuse 10**400."""
    manifest, arrays = copy.deepcopy(tabular[0]), tabular[1]
    edit(manifest)
    with pytest.raises(ModelFormatError):
        validate(manifest, arrays)
    with pytest.raises(ModelFormatError):
        from_manifest(manifest, arrays)


def test_good_files_load_in_both_and_agree(tmp_path, tabular):
    write_lnn(tmp_path / "t.lnn", *tabular)
    a, b = L.load(tmp_path / "t.lnn"), rt_load(tmp_path / "t.lnn")
    rows = {"a": [0.5, -1.0], "b": [0.0, 0.0], "c": [1.0, 2.0]}
    np.testing.assert_allclose(a.predict_proba(rows), b.predict_proba(rows), rtol=1e-5)


# --------------------------------------------------------------------- 3. one budget


def test_lstm_over_millions_of_steps_refused_before_planning(tmp_path):
    from lepton_nn.nn.recurrent import LSTM

    manifest, arrays = _module([LSTM(2)], (5, 3))
    manifest["model"]["input_shape"] = [None, 5_000_000, 3]
    manifest["model"]["output_shape"] = None
    _both_refuse(tmp_path, manifest, arrays, "max_time_steps")


def test_huge_embedding_counts_against_the_parameter_budget(tmp_path):
    from lepton_nn.nn.recurrent import Embedding

    manifest, arrays = _module([Embedding(10, 4)], (6,))
    manifest["model"]["architecture"]["config"]["layers"][0]["config"]["input_dim"] = 10**9
    _both_refuse(tmp_path, manifest, arrays, "max_params")


def test_conv_with_huge_activations_refused_at_load(tmp_path):
    from lepton_nn.nn.conv import Conv2D

    manifest, arrays = _module([Conv2D(4096, 1)], (1, 4, 4))
    manifest["model"]["output_shape"] = None
    manifest["model"]["input_shape"] = [None, 1, 1000, 1000]  # the issue's: 61 GB at predict
    _both_refuse(tmp_path, manifest, arrays, "scratch values per sample")
    manifest["model"]["input_shape"] = [None, 1, 100, 100]  # 164 MB a sample
    _both_refuse(
        tmp_path, manifest, arrays, "max_activation_bytes", limits={"max_activation_bytes": 10**8}
    )


def test_limits_are_the_callers_to_set(tmp_path):
    manifest, arrays = _module([nn.Dense(8), nn.Dense(2)], (4,))
    write_lnn(tmp_path / "m.lnn", manifest, arrays)
    for loader in (L.load, rt_load):
        loader(tmp_path / "m.lnn")
        with pytest.raises(ModelFormatError, match="max_params=10"):
            loader(tmp_path / "m.lnn", limits={"max_params": 10})
        with pytest.raises(ModelFormatError, match="max_activation_bytes"):
            loader(tmp_path / "m.lnn", limits=Limits(max_activation_bytes=20))
    with pytest.raises(ValueError, match="unknown keys"):
        Limits.of({"max_parameters": 1})


def test_validator_summary_counts(tmp_path):
    manifest, arrays = _module([nn.Dense(8, activation="relu"), nn.Dense(3, "softmax")], (4,))
    s = validate(manifest, arrays)
    assert s.n_params == 4 * 8 + 8 + 8 * 3 + 3
    assert s.output_shape == (3,) and s.final_activation == "softmax"
    assert s.activation_bytes == 4 * (4 + 8 + 3)


# --------------------------------------------------------------------- CSR indices


def _csr_file():
    from lepton_nn.compress import compressed_to_lnn

    L.set_seed(3)
    model = nn.Sequential([nn.Dense(6, "relu"), nn.Dense(2)])
    model.build((None, 8))
    w = model.layers[0].weight.data
    w[np.random.default_rng(0).random(w.shape) < 0.7] = 0
    w[0, 0] = w[1, 0] = 1.0  # unit 0 reads inputs 0 and 1
    manifest, arrays = compressed_to_lnn(model, None, min_sparsity=0.5)
    return manifest, arrays


@pytest.mark.parametrize("defect", ["duplicate", "unsorted"])
def test_duplicate_or_unsorted_csr_indices_refused(tmp_path, defect):
    manifest, arrays = _csr_file()
    write_lnn(tmp_path / "ok.lnn", manifest, arrays)
    L.load(tmp_path / "ok.lnn")
    rt_load(tmp_path / "ok.lnn")
    [name] = [k for k in arrays if k.endswith("/indices")]
    idx = arrays[name].copy()
    assert idx[0] == 0 and idx[1] == 1  # row 0 starts with inputs 0, 1
    idx[:2] = [1, 1] if defect == "duplicate" else [1, 0]
    _both_refuse(tmp_path, manifest, {**arrays, name: idx}, "row 0 has duplicate or unsorted")


def _csr_damage(arrays, part, fn):
    [name] = [k for k in arrays if k.endswith("/" + part)]
    return {**arrays, name: fn(arrays[name].copy())}


def _set(a, i, v):
    a[i] = v
    return a


@pytest.mark.parametrize(
    "part, damage, match",
    [
        ("indices", lambda a: _set(a, -1, 8), r"outside \[0, 8\)"),  # K = 8
        ("indices", lambda a: _set(a, -1, -1), r"outside \[0, 8\)"),
        ("indptr", lambda a: _set(a, 2, a[3] + 1), "never decrease"),  # row 2 past row 3
        ("indptr", lambda a: a + 1, "start at 0"),
        ("indptr", lambda a: _set(a, -1, a[-1] - 1), "end at nnz"),
        ("indptr", lambda a: a[:-1], r"shape \(6,\), expected \(7,\)"),  # N + 1 = 7
        ("data", lambda a: a[:-1], "same length"),
        ("indices", lambda a: a[:-1], "same length"),
        ("indices", lambda a: a.astype(np.int64), "int64, expected int32"),
        ("data", lambda a: a.astype(np.float64), "float64, expected float32"),
        ("data", lambda a: _set(a, 0, np.inf), "must be finite"),
        ("data", lambda a: a.reshape(1, -1), "same length"),
    ],
)
def test_damaged_csr_sections_refused(tmp_path, part, damage, match):
    """Every damaged CSR array is a ModelFormatError naming the defect, in both loaders,
    before any kernel reads it (the runtime's sparse chain trusts the checked structure)."""
    manifest, arrays = _csr_file()
    _both_refuse(tmp_path, manifest, _csr_damage(arrays, part, damage), match)


# --------------------------------------------------------------------- stale temp files


def test_stale_temp_files_of_the_same_target_are_removed(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    import subprocess
    import sys

    manifest, arrays = _module([nn.Dense(2)], (3,))
    # a save killed mid-write (SIGKILL: no cleanup ran) leaves its temp file behind
    child = (
        "import os, signal, sys; sys.path.insert(0, os.getcwd());"
        "from lepton_nn.runtime import format as f;"
        f"fd = os.open({str(tmp_path / '.m.lnn.killed01.tmp')!r}, os.O_CREAT | os.O_WRONLY);"
        "os.write(fd, b'x' * 1000); f._hold(fd); os.kill(os.getpid(), signal.SIGKILL)"
    )
    subprocess.run([sys.executable, "-c", child], check=False)
    (tmp_path / ".m.lnn.abcd1234.tmp").write_bytes(b"old")  # another dead one
    live = tmp_path / ".m.lnn.live5678.tmp"  # a save still running: its lock is held
    fd = os.open(live, os.O_CREAT | os.O_WRONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    others = [tmp_path / ".other.lnn.abcd1234.tmp", tmp_path / ".m.lnn.notes.txt"]
    for p in others:
        p.write_bytes(b"keep")
    try:
        assert (tmp_path / ".m.lnn.killed01.tmp").exists()
        write_lnn(tmp_path / "m.lnn", manifest, arrays)
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted(["m.lnn", live.name, *(p.name for p in others)])
    finally:
        os.close(fd)


# --------------------------------------------------------------------- non-finite numbers


def test_quantizing_inf_or_nan_weights_is_refused_before_writing(tmp_path):
    from lepton_nn.compress import quantize

    L.set_seed(1)
    model = nn.Sequential([nn.Dense(4, "relu"), nn.Dense(2)])
    model.build((None, 3))
    model.layers[1].weight.data[0, 1] = np.inf
    with pytest.raises(L.LeptonError, match="inf/NaN values in 'weight'"):
        quantize(model)
    model.layers[1].weight.data[0, 1] = np.nan
    with pytest.raises(L.LeptonError, match="dense"):
        quantize(model, exclude=["layers.0"])
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("precision", ["float32", "float64", "int8"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_runtime_refuses_non_finite_inputs_in_every_precision(tmp_path, precision, bad):
    from lepton_nn.compress import quantize

    L.set_seed(2)
    dtype = "float64" if precision == "float64" else "float32"
    model = nn.Sequential([nn.Dense(8, "relu", dtype=dtype), nn.Dense(3, dtype=dtype)])
    model.build((None, 5))
    if precision == "int8":
        L.save(quantize(model), tmp_path / "m.lnn")
    else:
        L.save(model, tmp_path / "m.lnn")
    served = rt_load(tmp_path / "m.lnn")
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(dtype)
    served.predict(x)
    huge = np.full((2, 5), np.finfo(dtype).max / 2, dtype)  # finite (float64: its sum is not)
    with np.errstate(over="ignore", invalid="ignore"):
        assert served.predict(huge).shape == (2, 3)
    x[2, 1] = bad
    with pytest.raises(L.DataError, match=r"1 row\(s\) \(0-based: 2\)"):
        served.predict(x)


def test_return_state_only_on_the_last_layer(tmp_path):
    from lepton_nn.nn.recurrent import GRU, LSTM

    manifest, arrays = _module([LSTM(3, return_sequences=True), GRU(2)], (4, 3))
    manifest["model"]["architecture"]["config"]["layers"][0]["config"]["return_state"] = True
    _both_refuse(tmp_path, manifest, arrays, "return_state is allowed on the last layer only")
