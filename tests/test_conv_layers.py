"""The convolution and pooling layers: shapes, "same" padding, errors that name the layer and
the shapes, geometry checked before the kernels, config round trips, float64."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import ShapeError, Tensor
from lepton_nn.nn import AvgPool2D, Conv2D, Flatten, GlobalAvgPool2D, MaxPool2D, Sequential
from lepton_nn.nn.serialize import layer_from_config, layer_to_config
from lepton_nn.ops.conv import conv2d, max_pool2d


def test_conv2d_layer_shapes_and_same_padding():
    for stride, hw in ((1, (7, 8)), (2, (4, 4)), (3, (3, 3))):
        layer = Conv2D(6, 3, stride=stride, padding="same")
        y = layer(np.zeros((2, 3, 7, 8), np.float32))
        assert y.shape == (2, 6, *hw) and y.dtype == np.float32
    assert layer.weight.shape == (6, 3, 3, 3) and layer.bias.shape == (6,)
    assert Conv2D(2, 2, in_channels=5).num_parameters() == 2 * 5 * 4 + 2


def test_pool_layers_shapes():
    x = np.zeros((2, 3, 9, 8), np.float32)
    assert MaxPool2D(2)(x).shape == (2, 3, 4, 4)
    assert MaxPool2D(3, stride=1, padding="same")(x).shape == (2, 3, 9, 8)
    assert AvgPool2D((3, 2), stride=(2, 1), padding=(1, 0))(x).shape == (2, 3, 5, 7)
    assert GlobalAvgPool2D()(x).shape == (2, 3)


def test_conv2d_errors_name_layer_and_shapes():
    layer = Conv2D(4, 3, name="c1")
    with pytest.raises(
        ShapeError, match=r"'c1'.*\(batch, channels, height, width\).*\(None, 3, 8\)"
    ):
        layer(np.zeros((2, 3, 8), np.float32))
    layer(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(ShapeError, match=r"'c1'.*\(batch, 3, height, width\).*\(1, 2, 8, 8\)"):
        layer(np.zeros((1, 2, 8, 8), np.float32))
    with pytest.raises(ShapeError, match="does not fit"):
        layer(np.zeros((1, 3, 2, 2), np.float32))
    with pytest.raises(ShapeError, match="MaxPool2D"):
        MaxPool2D(2)(np.zeros((2, 8), np.float32))
    with pytest.raises(ValueError, match="padding"):
        Conv2D(4, 3, padding="full")
    with pytest.raises(ValueError, match="half the pool size"):
        max_pool2d(Tensor(np.zeros((1, 1, 4, 4))), 2, 2, 2)


def test_conv_geometry_is_checked_before_the_kernels():
    # huge dilation and padding used to reach the compiled im2col (and overflow there)
    x = np.zeros((1, 3, 8, 8), np.float32)
    with pytest.raises(ShapeError, match=r"layer 'big' \(conv2d\).*larger than 1048576"):
        Conv2D(2, 3, dilation=2**61, padding=2**62, name="big")(x)
    with pytest.raises(ShapeError, match=r"'wide'.*im2col would need"):
        Conv2D(2, 3, padding=5000, name="wide")(x)  # fits, but a 10k x 10k column buffer
    with pytest.raises(ShapeError, match=r"layer 'p' \(max_pool2d\).*larger than"):
        MaxPool2D(2**30, padding="same", name="p")(x)
    with pytest.raises(ShapeError, match=r"^conv2d: .*larger than"):
        conv2d(Tensor(x), Tensor(np.zeros((2, 3, 3, 3), np.float32)), stride=2**21)
    with pytest.raises(ShapeError, match=r"layer 'a' \(avg_pool2d\).*does not fit"):
        AvgPool2D(9, name="a")(x)


def test_conv_configs_round_trip():
    model = Sequential(
        [
            Conv2D(4, (3, 2), stride=(2, 1), padding=(1, 0), activation="relu", in_channels=2),
            MaxPool2D(2, padding="same"),
            AvgPool2D(2, count_include_pad=False),
            GlobalAvgPool2D(),
            Flatten(),
        ]
    )
    again = layer_from_config(layer_to_config(model))
    assert [layer_to_config(m) for m in again] == [layer_to_config(m) for m in model]


def test_float64_model_and_no_grad():
    layer = Conv2D(2, 3, padding=1, dtype="float64")
    with ln.no_grad():
        y = layer(np.ones((1, 1, 4, 4)))
    assert y.dtype == np.float64 and y._ctx is None
