"""The NumPy-only runtime serves the layers added for ONNX interchange (issue 17): the
extra activations, grouped/depthwise Conv2D, Conv1D and padding, from a saved file, with
the layers' own results, in float32 and float64."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn as ln
import lepton_nn.runtime as rt
from lepton_nn import nn
from lepton_nn.errors import ModelFormatError
from lepton_nn.io import module_to_lnn
from lepton_nn.runtime.format import write_lnn


def _manifest(model):
    section, arrays = module_to_lnn(model)
    return {"kind": "module", "model": section}, arrays


def _served(tmp_path, model, shape, dtype):
    model = model.astype(dtype)
    model.build((None, *shape))
    ln.save(model, tmp_path / "m.lnn")
    return model, rt.load(tmp_path / "m.lnn")


def _check(tmp_path, model, shape, dtype, exact=True):
    model, served = _served(tmp_path, model, shape, dtype)
    for n in (1, 5):
        x = (np.random.default_rng(n).standard_normal((n, *shape)) * 3).astype(dtype)
        got, want = served.predict(x), model(x).data
        assert got.dtype == want.dtype == dtype
        if exact:
            np.testing.assert_array_equal(got, want)
        else:
            tol = 1e-5 if dtype == "float32" else 1e-12
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    return served


def _activations():
    return nn.Sequential(
        [
            nn.Dense(6, "elu"),
            nn.LeakyReLU(0.2),
            nn.Dense(6, "gelu_erf"),
            nn.GELU("none"),
            nn.HardSigmoid(0.3, 0.1),
            nn.Clip(max=0.5),
            nn.Clip(-0.2, 0.4),
            nn.Sign(),
            nn.GELU(),
            nn.Dense(5, "mish"),
            nn.Softplus(),
            nn.ReLU6(),
            nn.SELU(),
            nn.HardSwish(),
            nn.ELU(0.5),
            nn.Dense(4, "hard_swish"),
            nn.Activation("leaky_relu"),
            nn.Dense(3, "selu"),
            nn.Activation("relu6"),
        ]
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_activations_are_served_exactly(tmp_path, dtype):
    served = _check(tmp_path, _activations(), (4,), dtype, exact=False)
    text = served.describe()
    assert "leaky_relu(alpha=0.2)" in text and "hard_sigmoid(alpha=0.3, beta=0.1)" in text
    assert "gelu_erf" in text


@pytest.mark.parametrize(
    "cls,config,match",
    [
        ("LeakyReLU", {"alpha": "x"}, "alpha"),
        ("Clip", {"min": 2.0, "max": 1.0}, "above max"),
        ("GELU", {"approximate": "fast"}, "approximate"),
        ("Dense", {"units": 2, "activation": "swish9"}, "unknown activation"),
    ],
)
def test_bad_activation_configs_are_refused(tmp_path, cls, config, match):
    model = nn.Sequential([nn.Dense(2, in_features=3), nn.LeakyReLU()])
    model.build((None, 3))
    manifest, arrays = _manifest(model)
    layers = manifest["model"]["architecture"]["config"]["layers"]
    if cls == "Dense":
        layers[0]["config"].update(config)
    else:
        layers[1] = {"class": cls, "config": {"name": "x", **config}}
    write_lnn(tmp_path / "bad.lnn", manifest, arrays)
    with pytest.raises(ModelFormatError, match=match):
        rt.load(tmp_path / "bad.lnn")


def _convs():
    yield (
        "grouped",
        nn.Sequential(
            [
                nn.Conv2D(6, 3, padding=1, groups=2, activation="relu"),
                nn.Conv2D(
                    6, (2, 3), stride=(2, 1), padding=(0, 1, 2, 0), groups=3, activation="elu"
                ),
                nn.Flatten(),
                nn.Dense(3),
            ]
        ),
        (4, 7, 6),
    )
    yield (
        "depthwise",
        nn.Sequential(
            [
                nn.Conv2D(8, 3, groups=4, padding="same"),  # channel multiplier 2
                nn.BatchNorm(),
                nn.ReLU(),
                nn.MaxPool2D(2),
                nn.Conv2D(8, 3, groups=8, activation="hard_swish", dilation=2, padding=2),
                nn.Conv2D(5, 1, activation="tanh"),
                nn.GlobalAvgPool2D(),
            ]
        ),
        (4, 9, 8),
    )
    yield (
        "conv1d",
        nn.Sequential(
            [
                nn.Conv1D(6, 3, padding="same", activation="relu"),
                nn.BatchNorm(),
                nn.Conv1D(6, 3, stride=2, groups=3, padding=(2, 1), activation="mish"),
                nn.Conv1D(6, 1, groups=6, dilation=1),
                nn.Conv1D(4, 2, dilation=2, activation="sigmoid"),
                nn.Flatten(),
            ]
        ),
        (3, 17),
    )
    yield (
        "pads",
        nn.Sequential(
            [
                nn.Pad2D((1, 2, 0, 3), "reflect"),
                nn.Pad2D(1, value=-0.5),
                nn.Conv2D(3, 3, activation="relu"),
                nn.Pad2D((2, 1), "replicate"),
                nn.ReLU(),  # runs in place on the padded buffer: the next run must refill it
                nn.Pad2D(0, "reflect"),
                nn.Flatten(),
            ]
        ),
        (2, 5, 6),
    )
    yield (
        "pads1d",
        nn.Sequential(
            [
                nn.Pad1D((2, 1), "replicate"),
                nn.Pad1D(3, "reflect"),
                nn.Conv1D(2, 3, activation="selu"),
                nn.Pad1D(2, value=1.5),
                nn.Activation("relu"),
            ]
        ),
        (2, 6),
    )


CONVS = [name for name, _, _ in _convs()]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", CONVS)
def test_grouped_conv1d_and_padding_are_served(tmp_path, name, dtype):
    model, shape = {n: (m, s) for n, m, s in _convs()}[name]
    model.astype(dtype).build((None, *shape))
    for layer in model.modules():  # BatchNorm statistics other than 0 and 1
        if type(layer).__name__ == "BatchNorm":
            r = np.random.default_rng(0)
            layer.running_mean[...] = r.standard_normal(layer.running_mean.shape)
            layer.running_var[...] = r.uniform(0.5, 2, layer.running_var.shape)
    model.eval()
    served = _check(tmp_path, model, shape, dtype, exact=False)
    model, served = _served(tmp_path, model, shape, dtype)
    x = np.random.default_rng(3).standard_normal((4, *shape)).astype(dtype)
    first = served.predict(x).copy()
    served.predict(x * 2)
    np.testing.assert_array_equal(served.predict(x), first)  # buffers refilled at every run
    if name == "depthwise":  # groups = C: tap by tap, as the op
        assert served.describe().count("depthwise conv") == 2
    if name == "grouped":
        assert served.describe().count("grouped conv") == 2


def test_pad_and_grouped_configs_from_a_hostile_file_are_refused(tmp_path):
    model = nn.Sequential([nn.Pad2D(1), nn.Conv2D(4, 3, groups=2)])
    model.build((None, 2, 5, 5))
    for change, match in (
        ({0: {"padding": [[1, 1]]}}, "pairs"),
        ({0: {"padding": [[0, 0], [9, 0]], "mode": "reflect"}}, "reflect"),
        ({0: {"mode": "wrap"}}, "mode"),
        ({0: {"value": "nan"}}, "value"),
        ({0: {"padding": [[0, 0], [2**40, 0]]}}, "scratch values"),
        ({1: {"groups": 3}}, "groups"),
        ({1: {"groups": 1}}, "weight"),
    ):
        manifest, arrays = _manifest(model)
        layers = manifest["model"]["architecture"]["config"]["layers"]
        for i, cfg in change.items():
            layers[i]["config"].update(cfg)
        write_lnn(tmp_path / "bad.lnn", manifest, arrays)
        with pytest.raises(ModelFormatError, match=match):
            rt.load(tmp_path / "bad.lnn")


def test_quantize_keeps_a_grouped_conv_float_and_says_so(tmp_path):
    from lepton_nn.compress import quantize, save_compressed

    ln.set_seed(0)
    model = nn.Sequential(
        [nn.Conv2D(4, 3, groups=2, activation="relu"), nn.Flatten(), nn.Dense(3, "elu")]
    )
    model.build((None, 2, 6, 6))
    x = np.random.default_rng(0).standard_normal((5, 2, 6, 6)).astype(np.float32)
    qm = quantize(model, x)
    reasons = {r["name"]: (r["int8"], r["reason"]) for r in qm.report}
    assert reasons[model.layers[0].name] == (False, "grouped")
    assert reasons[model.layers[2].name][0] is True
    save_compressed(qm, tmp_path / "q.lnn")
    served = rt.load(tmp_path / "q.lnn")
    np.testing.assert_allclose(served.predict(x), qm(x).data, rtol=1e-5, atol=1e-5)


def test_compact_leaves_grouped_convolutions_whole():
    from lepton_nn.compress import compact, prune_structured

    ln.set_seed(0)
    model = nn.Sequential(
        [
            nn.Conv2D(4, 3, activation="relu"),
            nn.Conv2D(4, 3, groups=2, activation="relu"),
            nn.Conv2D(4, 1, groups=4),
            nn.Flatten(),
            nn.Dense(2),
        ]
    )
    model.build((None, 2, 8, 8))
    prune_structured(model, 0.5)
    x = np.random.default_rng(0).standard_normal((3, 2, 8, 8)).astype(np.float32)
    model.eval()
    small = compact(model)
    assert [m.weight.shape for m in small.layers if hasattr(m, "weight")][:3] == [
        m.weight.shape for m in model.layers if hasattr(m, "weight")
    ][:3]
    np.testing.assert_allclose(small(x).data, model(x).data, rtol=1e-5, atol=1e-6)


def test_threaded_grouped_conv_plans_hold_blas(tmp_path):
    """Grouped convolutions spread over the plan's threads like plain ones: BLAS is held to
    one thread while a plan runs whose im2col chunks call it from several threads (float64
    here); float32 stride-1 groups run the direct kernel, which calls no BLAS: not held."""
    for dtype, held in (("float64", True), ("float32", False)):
        model = nn.Sequential([nn.Conv2D(16, 3, groups=2), nn.Flatten()])
        # float32 stride-1 groups run the direct kernel (its own order of sums): float rounding
        _check(tmp_path, model, (4, 32, 32), dtype, exact=dtype == "float64")
        served = rt.load(tmp_path / "m.lnn", threads=1)
        assert not served.plan_for(64).hold_blas
        threaded = rt.load(tmp_path / "m.lnn", threads=2)  # 13 chunks of 5 images a group
        assert threaded.plan_for(64).hold_blas == held
        x = np.random.default_rng(0).standard_normal((64, 4, 32, 32)).astype(dtype)
        np.testing.assert_array_equal(threaded.predict(x), served.predict(x))
