"""Chapter 6 exercises: convolution as im2col, and one LSTM step with its backward.

Images are NCHW: x (N, C, H, W), weights w (O, C, kh, kw), one ``stride`` and one zero
``padding`` for both spatial axes; OH = (H + 2 padding - kh) // stride + 1, likewise OW.
Fill in every function, then run ``pytest docs/exercises/ch06``.
"""

from __future__ import annotations

import numpy as np  # noqa: F401


def im2col(x, kh, kw, stride=1, padding=0):
    """Every window of every image as a column: cols (N, C kh kw, OH OW), with
    cols[n, (c kh + i) kw + j, y OW + z] = x_padded[n, c, y stride + i, z stride + j]."""
    raise NotImplementedError("exercise 6.1: im2col")


def col2im(cols, x_shape, kh, kw, stride=1, padding=0):
    """The adjoint of im2col: start from zeros of ``x_shape`` and *add* each entry of cols to
    the pixel it was read from (entries read from the padding are dropped)."""
    raise NotImplementedError("exercise 6.2: col2im")


def conv2d_forward(x, w, b, stride=1, padding=0):
    """y (N, O, OH, OW) = w reshaped to (O, C kh kw) times each image's cols, plus b (O,)."""
    raise NotImplementedError("exercise 6.3: conv2d_forward")


def conv2d_backward(G, x, w, stride=1, padding=0):
    """G = dL/dy (N, O, OH, OW) -> (dx, dw, db), the shapes of x, w and b: dw sums
    G_n cols_n^T over the images, dx is col2im of w^T G_n, db sums G over all but axis 1."""
    raise NotImplementedError("exercise 6.4: conv2d_backward")


def lstm_step(x_t, h, c, W_ih, W_hh, b):
    """One LSTM step. x_t (B, F), h and c (B, U), W_ih (F, 4U), W_hh (U, 4U), b (4U,).

    z = x_t W_ih + h W_hh + b, split in gate blocks i, f, g, o (in this order);
    i, f, o = sigmoid(.), g = tanh(.);  c' = f c + i g;  h' = o tanh(c').
    Returns (h', c', cache): cache is anything your backward needs."""
    raise NotImplementedError("exercise 6.5: lstm_step")


def lstm_step_backward(dh, dc, cache):
    """From dL/dh' and dL/dc' (B, U) to the gradients of every input of lstm_step:
    returns dict(x_t=..., h=..., c=..., W_ih=..., W_hh=..., b=...), each of that input's shape.
    The gradient reaching c' is dc + dh o (1 - tanh(c')^2)."""
    raise NotImplementedError("exercise 6.6: lstm_step_backward")
