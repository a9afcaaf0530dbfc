"""Writes the Keras models of tests/test_onnx_keras.py as ONNX files through tf2onnx.

Run where TensorFlow installs (its own environment: ``pip install tensorflow-cpu tf2onnx``),
from the repository root: ``python tests/data/make_keras_onnx.py``. The files (a few KB
each, fixed seeds) are committed, so the tests need only ONNX Runtime and lepton_nn; the
tests check lepton_nn's import of each file against ONNX Runtime on the same file.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keras")
OPSET = 17
L = keras.layers


def mlp():
    x = keras.Input((8,), name="x")
    y = L.Dense(16, activation="relu")(x)
    y = L.Dropout(0.2)(y)
    y = L.Dense(12, activation="tanh")(y)
    return keras.Model(x, L.Dense(3, activation="softmax")(y))


def cnn():
    """Channels-last images: conv + BatchNorm + ReLU, a residual block, pooling, a head."""
    x = keras.Input((12, 12, 3), name="x")
    y = L.Conv2D(8, 3, padding="same")(x)
    y = L.ReLU()(L.BatchNormalization()(y))
    z = L.Conv2D(8, 3, padding="same", activation="relu")(y)
    y = L.Add()([y, z])
    y = L.MaxPooling2D(2)(y)
    y = L.Conv2D(12, 3, strides=2, activation="relu")(y)
    y = L.GlobalAveragePooling2D()(y)
    return keras.Model(x, L.Dense(4)(y))


def lstm():
    x = keras.Input((6, 5), name="x")
    y = L.LSTM(8, return_sequences=True)(x)
    y = L.LSTM(6)(y)
    return keras.Model(x, L.Dense(2)(y))


def cnn_flatten():
    """A channels-last conv flattened for its head: tf2onnx transposes back to NHWC first."""
    x = keras.Input((10, 10, 2), name="x")
    y = L.Conv2D(6, 3, strides=2, padding="same", activation="relu")(x)
    y = L.MaxPooling2D(2)(L.Conv2D(6, 3, padding="same")(y))
    return keras.Model(x, L.Dense(3, activation="softmax")(L.Flatten()(y)))


def text():
    """Embedding + LSTM text classifier on token ids (Keras's GRU is written by tf2onnx
    1.17 as a ``Loop`` over its while loop, not as an ONNX GRU: not convertible here)."""
    x = keras.Input((9,), dtype="int32", name="x")
    y = L.Embedding(30, 6)(x)
    y = L.LSTM(7)(y)
    return keras.Model(x, L.Dense(2, activation="softmax")(y))


def bilstm():
    """Bidirectional LSTMs, sequences then final states (tf2onnx slices each direction out
    of one bidirectional ONNX LSTM and concatenates them)."""
    x = keras.Input((7, 4), name="x")
    y = L.Bidirectional(L.LSTM(5, return_sequences=True))(x)
    y = L.Bidirectional(L.LSTM(4))(y)
    return keras.Model(x, L.Dense(3, activation="softmax")(y))


MODELS = {"mlp": mlp, "cnn": cnn, "cnn_flatten": cnn_flatten, "lstm": lstm, "text": text,
          "bilstm": bilstm}  # fmt: skip


def _randomize(model, seed: int) -> None:
    """Nonzero biases and BatchNorm statistics, so every term of the graph matters."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        v = rng.standard_normal(w.shape).astype("float32") * 0.4
        if "variance" in w.path:
            v = np.abs(v) + 0.5
        w.assign(v)


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    keras.utils.set_random_seed(0)
    for i, (name, build) in enumerate(MODELS.items()):
        model = build()
        _randomize(model, i)
        spec = model.inputs[0]
        sig = [tf.TensorSpec((None, *spec.shape[1:]), spec.dtype, name="x")]

        @tf.function(input_signature=sig)
        def fn(x, model=model):
            return model(x, training=False)

        path = os.path.join(OUT, f"{name}.onnx")
        tf2onnx.convert.from_function(fn, input_signature=sig, opset=OPSET, output_path=path)
        print(f"{path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
