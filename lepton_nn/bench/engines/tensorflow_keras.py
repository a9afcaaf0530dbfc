"""TensorFlow/Keras' cases: a ``tf.function`` training step and ``Model.fit`` (W1-W4), eager
calls, ``tf.function`` and ``predict`` (W5). tensorflow and keras are imported inside each
function only."""

from __future__ import annotations

import time

import numpy as np

from ..cases import Case, cycle, round_arrays
from ..workloads import (
    ADAM,
    NetSpec,
    glorot_weights,
    inference_data,
    net_data,
    net_weights,
    training_data,
)


def keras_mlp(sizes, weights=None):
    """A Keras Sequential of Dense layers (ReLU hidden, linear output) holding ``weights``."""
    import keras

    layers = [keras.Input((sizes[0],))]
    for k, n_out in enumerate(sizes[1:]):
        layers.append(keras.layers.Dense(n_out, activation="relu" if k < len(sizes) - 2 else None))
    model = keras.Sequential(layers)
    if weights is not None:
        model.set_weights([a for wb in weights for a in wb])
    return model


def keras_loss(kind: str):
    """Keras' BCE (``bce``) or sparse cross-entropy, both on logits."""
    import keras

    if kind == "bce":
        return keras.losses.BinaryCrossentropy(from_logits=True)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def keras_adam():
    """Keras' Adam with the settings every engine shares (:data:`ADAM`)."""
    import keras

    b1, b2 = ADAM["betas"]
    return keras.optimizers.Adam(
        learning_rate=ADAM["lr"], beta_1=b1, beta_2=b2, epsilon=ADAM["eps"]
    )


def keras_net(spec: NetSpec, weights: dict[str, np.ndarray]):
    """The W3 CNN or W4 LSTM in Keras, holding ``weights`` converted to Keras' layouts.

    The CNN is channels_last (NHWC): TensorFlow's recommended, and on CPU only fully
    supported, convolution layout. Kernels go (F, C, kh, kw) -> (kh, kw, C, F) and the head's
    rows are permuted from (C, H, W) to (H, W, C) flattening order, so the function computed is
    the same as lepton_nn's and PyTorch's.
    """
    import keras

    if spec.kind == "cnn":
        layers, vals = [keras.Input((*spec.shape[1:], spec.shape[0]))], []
        for i, f in enumerate(spec.widths, 1):
            layers += [
                keras.layers.Conv2D(f, spec.kernel, padding="same", activation="relu"),
                keras.layers.MaxPooling2D(spec.pool),
            ]
            vals += [weights[f"conv{i}_w"].transpose(2, 3, 1, 0), weights[f"conv{i}_b"]]
        c, h = spec.widths[-1], spec.shape[1] // spec.pool ** len(spec.widths)
        w = spec.shape[2] // spec.pool ** len(spec.widths)
        head = weights["dense_w"].reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(c * h * w, -1)
        layers += [keras.layers.Flatten(), keras.layers.Dense(spec.classes)]
        vals += [head, weights["dense_b"]]
    else:
        layers = [
            keras.Input(spec.shape),
            keras.layers.LSTM(spec.widths[0]),
            keras.layers.Dense(spec.classes),
        ]
        vals = [weights[k] for k in ("lstm_w_ih", "lstm_w_hh", "lstm_b", "dense_w", "dense_b")]
    model = keras.Sequential(layers)
    model.set_weights([np.ascontiguousarray(v) for v in vals])
    return model


def _keras_x(spec: NetSpec, x: np.ndarray) -> np.ndarray:
    """Batches in Keras' layout: NCHW -> NHWC for the CNN (converted once, untimed)."""
    return np.ascontiguousarray(np.moveaxis(x, 2, -1)) if spec.kind == "cnn" else x


def _net_training(workload, spec) -> list[Case]:
    x, y = net_data(spec)
    weights = net_weights(spec)
    how = (
        "; Keras `Conv2D`/`MaxPooling2D` channels_last (NHWC: the layout TensorFlow recommends "
        "on CPU, data transposed once beforehand)"
        if spec.kind == "cnn"
        else "; Keras `LSTM(64)` with its default arguments (tanh/sigmoid, unit forget bias)"
    )
    return _mlp_training(
        workload, spec, lambda: keras_net(spec, weights), (_keras_x(spec, x), y), how
    )


def _mlp_training(workload, spec, make_model=None, data=None, how_extra="") -> list[Case]:
    import tensorflow as tf

    x, y = data if data is not None else training_data(spec)
    xs = [tf.constant(a) for a in cycle(x)]
    ys = [tf.constant(a) for a in cycle(y)]
    nb = len(xs)
    if make_model is None:

        def make_model():
            return keras_mlp(spec.sizes, glorot_weights(spec.sizes))

    model = make_model()
    opt, loss_fn = keras_adam(), keras_loss(spec.loss)

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    cases = [
        Case(
            workload,
            "tensorflow",
            "tf.function step",
            "a custom training step compiled with `@tf.function` (GradientTape + "
            "`optimizer.apply_gradients`), as in TF's 'training loop from scratch' guide; "
            "batches pre-converted to `tf.constant`; no XLA" + how_extra,
            spec.batch,
            step=lambda i: train_step(xs[i % nb], ys[i % nb]),
            sync=lambda out: out.numpy() if out is not None else None,
        )
    ]

    fit_model = make_model()
    fit_model.compile(optimizer=keras_adam(), loss=keras_loss(spec.loss))
    xr, yr = round_arrays(x, y)

    def round_(n):
        xa, ya = xr(n), yr(n)
        t = time.perf_counter()
        fit_model.fit(xa, ya, batch_size=spec.batch, epochs=1, shuffle=False, verbose=0)
        return time.perf_counter() - t

    cases.append(
        Case(
            workload,
            "tensorflow",
            "Model.fit",
            "`model.compile(Adam, loss)` then `model.fit(X, y, batch_size, epochs=1, "
            "shuffle=False, verbose=0)` per round on NumPy arrays (Keras' recommended API; "
            "jit_compile left at its default, which is off on CPU)" + how_extra,
            spec.batch,
            round=round_,
        )
    )
    return cases


def _inference(workload, spec_batch) -> list[Case]:
    import tensorflow as tf

    spec, batch = spec_batch
    x = inference_data(spec, batch)
    xs, ts = cycle(x), [tf.constant(a) for a in cycle(x)]
    nb = len(xs)
    model = keras_mlp(spec.sizes, glorot_weights(spec.sizes))
    compiled = tf.function(lambda t: model(t, training=False))
    latency = batch == 1
    return [
        Case(
            workload,
            "tensorflow",
            "model(x)",
            "Keras eager call `model(x, training=False)` on a tf.Tensor",
            batch,
            step=lambda i: model(ts[i % nb], training=False),
            latency=latency,
        ),
        Case(
            workload,
            "tensorflow",
            "tf.function",
            "`tf.function(lambda x: model(x, training=False))` on a tf.Tensor",
            batch,
            step=lambda i: compiled(ts[i % nb]),
            latency=latency,
        ),
        Case(
            workload,
            "tensorflow",
            "predict",
            "`model.predict(x, verbose=0)` on a NumPy array",
            batch,
            step=lambda i: model.predict(xs[i % nb], verbose=0),
            latency=latency,
        ),
    ]


BUILDERS = {"mlp": _mlp_training, "inference": _inference, "net": _net_training}
