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
