"""The local gradient rule of every op, in words and in math, for :func:`explain_backward`.

Notation: the op computed y from its inputs; g = dL/dy is the gradient arriving at y; the rule
says what each input receives. ``unbroadcast`` sums a gradient back to an input's shape (the
adjoint of NumPy broadcasting). A ``Function`` subclass outside this table can carry its own
rule as a class attribute ``rule = ("words", "math")``; otherwise the first line of its
docstring is shown.
"""

from __future__ import annotations

from ..autograd import Function

__all__ = ["RULES", "rule_for"]

RULES: dict[str, tuple[str, str]] = {
    # -- elementwise ---------------------------------------------------------------------
    "Add": (
        "a sum passes the gradient unchanged to both inputs (summed over broadcast axes)",
        "dL/da = unbroadcast(g), dL/db = unbroadcast(g)",
    ),
    "Sub": (
        "a difference passes the gradient to a and its negative to b",
        "dL/da = unbroadcast(g), dL/db = -unbroadcast(g)",
    ),
    "Mul": (
        "a product sends each input the gradient times the other input",
        "dL/da = unbroadcast(g * b), dL/db = unbroadcast(g * a)",
    ),
    "Div": (
        "a quotient: divide by b for a; for b, the quotient rule",
        "dL/da = unbroadcast(g / b), dL/db = unbroadcast(-g * a / b^2)",
    ),
    "Pow": (
        "power rule for the base; for the exponent, y times log of the base",
        "dL/da = g * b * a^(b-1), dL/db = g * y * log(a)",
    ),
    "Neg": ("negation flips the sign of the gradient", "dL/da = -g"),
    "Exp": ("exp is its own derivative: multiply by the output", "dL/da = g * y, y = exp(a)"),
    "Log": ("log: divide by the input", "dL/da = g / a"),
    "Sqrt": ("sqrt: divide by twice the output", "dL/da = g / (2 y), y = sqrt(a)"),
    "Abs": ("abs: multiply by the sign of the input", "dL/da = g * sign(a)"),
    "Relu": (
        "ReLU lets the gradient through where the output is positive and blocks it elsewhere",
        "dL/da = g * [y > 0]",
    ),
    "Sigmoid": (
        "sigmoid's slope is y (1 - y), largest (1/4) at a = 0",
        "dL/da = g * y * (1 - y)",
    ),
    "Tanh": ("tanh's slope is 1 - y^2", "dL/da = g * (1 - y^2)"),
    "Gelu": (
        "GELU (tanh form): the product rule on a/2 (1 + t), t = tanh(c (a + 0.044715 a^3))",
        "dL/da = g * (0.5 (1 + t) + 0.5 a (1 - t^2) c (1 + 3 * 0.044715 a^2))",
    ),
    "Maximum": (
        "the larger input takes the whole gradient (ties go to the first)",
        "dL/da = g * [a >= b], dL/db = g * [a < b]",
    ),
    "Where": (
        "each position's gradient goes to the input that was selected there",
        "dL/da = g * cond, dL/db = g * (1 - cond)",
    ),
    "Clip": (
        "clipped positions are flat, so they pass no gradient",
        "dL/da = g * [lo <= a <= hi]",
    ),
    "FakeQuant": (
        "rounding to the int8 grid passes the gradient straight through, except where it clips",
        "dL/da = g * [lo <= rint(a / s) + z <= hi]",
    ),
    # -- more activations (ops/activation.py) ---------------------------------------------
    "LeakyRelu": (
        "leaky ReLU passes the gradient where the input is positive, alpha times it elsewhere",
        "dL/da = g * (1 if a > 0 else alpha)",
    ),
    "Relu6": ("ReLU6 passes the gradient only between 0 and 6", "dL/da = g * [0 < a < 6]"),
    "Elu": (
        "ELU: slope 1 for positive inputs, the output plus alpha elsewhere",
        "dL/da = g * (1 if a > 0 else y + alpha)",
    ),
    "Selu": (
        "SELU: scale for positive inputs, the output plus scale alpha elsewhere",
        "dL/da = g * (scale if a > 0 else y + scale alpha)",
    ),
    "HardSigmoid": (
        "hard sigmoid has slope alpha on its ramp and is flat where it is clipped",
        "dL/da = g * alpha * [0 < alpha a + beta < 1]",
    ),
    "HardSwish": (
        "hard swish: the product rule on a h(a), h = hard_sigmoid(a, 1/6, 1/2)",
        "dL/da = g * (h(a) + a/6 [-3 < a < 3])",
    ),
    "Softplus": ("softplus's slope is the sigmoid of its input", "dL/da = g * sigmoid(a)"),
    "Mish": (
        "mish: the product rule on a tanh(softplus(a))",
        "dL/da = g * (t + a (1 - t^2) sigmoid(a)), t = tanh(softplus(a))",
    ),
    "GeluErf": (
        "exact GELU: the normal CDF plus the input times the normal density",
        "dL/da = g * (Phi(a) + a phi(a))",
    ),
    "Sign": ("sign is flat almost everywhere: no gradient passes", "dL/da = 0"),
    "Cast": ("a cast passes the gradient back in the input's dtype", "dL/da = g.astype(a.dtype)"),
    # -- linear algebra --------------------------------------------------------------------
    "MatMul": (
        "a matrix product sends A the gradient times B transposed, and B A transposed times g",
        "dL/dA = g @ B^T, dL/dB = A^T @ g",
    ),
    "Linear": (
        "a dense layer: through the activation first, then the matrix product and the bias",
        "G_z = g * f'(z), dL/dX = G_z @ W^T, dL/dW = X^T @ G_z, dL/db = sum_rows G_z",
    ),
    # -- reductions --------------------------------------------------------------------------
    "Sum": (
        "every summed element contributed once: copy the gradient back over the reduced axes",
        "dL/da = broadcast(g)",
    ),
    "Mean": (
        "like sum, divided by the number of elements averaged",
        "dL/da = broadcast(g) / n",
    ),
    "Max": (
        "only the maximal elements receive the gradient (shared equally between ties)",
        "dL/da = broadcast(g) * [a == max] / count",
    ),
    "Softmax": (
        "softmax's Jacobian diag(y) - y y^T applied to g",
        "dL/da = y * (g - sum(g * y))",
    ),
    "LogSoftmax": (
        "log-softmax: the gradient minus the softmax times its sum",
        "dL/da = g - softmax(a) * sum(g)",
    ),
    # -- shape ---------------------------------------------------------------------------------
    "Reshape": (
        "a reshape moves no numbers: reshape the gradient back",
        "dL/da = g.reshape(a.shape)",
    ),
    "Transpose": (
        "a transpose: transpose the gradient back with the inverse permutation",
        "dL/da = g.transpose(argsort(axes))",
    ),
    "GetItem": (
        "indexing: scatter the gradient back into zeros (repeated indices add)",
        "dL/da = zeros; dL/da[index] += g",
    ),
    "Concat": (
        "a concatenation: split the gradient into the inputs' pieces",
        "dL/da_i = split(g)_i",
    ),
    "Stack": ("a stack: unstack the gradient along the new axis", "dL/da_i = g[i] (along axis)"),
    # -- losses ----------------------------------------------------------------------------------
    "SoftmaxCrossEntropy": (
        "softmax + cross-entropy together: predicted probabilities minus the one-hot truth",
        "dL/dz = (softmax(z) - onehot(y)) * g_i (g_i = g / N for the mean)",
    ),
    "SoftTargetCrossEntropy": (
        "cross-entropy with target distributions: probabilities minus the targets",
        "dL/dz = (softmax(z) * sum(t) - t) * g_i",
    ),
    "BCEWithLogits": (
        "sigmoid + binary cross-entropy together: predicted probability minus the label",
        "dL/dz = (sigmoid(z) (pw y + 1 - y) - pw y) * g_i",
    ),
    # -- convolution, pooling, normalization -----------------------------------------------------
    "Conv2d": (
        "a convolution is a matrix product on im2col patches: the same rules, then col2im",
        "dL/dW = sum_n g[n] @ cols[n]^T, dL/dX = col2im(W2^T @ g), dL/db = sum g",
    ),
    "GroupedConv2d": (
        "a grouped convolution is one convolution per group: each group's rules on its slices",
        "dL/dX[:, group g] = conv2d backward of group g; dL/dW, dL/db side by side by group",
    ),
    "DepthwiseConv2d": (
        "a depthwise convolution is a weighted sum of shifted copies of each channel: each tap "
        "sends back the gradient times its weight, and takes the gradient times its window",
        "dL/dW[o,p,q] = sum g[:, o] * window_pq(X)[:, o // m], dL/dX = sum_taps shift(W g)",
    ),
    "Pad": (
        "padding: the interior passes its gradient back; a reflected or replicated cell adds "
        "its gradient to the cell it copied",
        "dL/dx[i] = g[i + before] + sum of g[p] over the padded p copying x[i]",
    ),
    "MaxPool2d": (
        "each window's gradient goes to the position that was the maximum",
        "dL/dx[argmax] += g",
    ),
    "AvgPool2d": (
        "each window spreads its gradient evenly over its cells",
        "dL/dx[cell] += g / divisor",
    ),
    "BatchNorm": (
        "normalization: the gradient through the batch statistics (mean and variance)",
        "dx = (dx_hat - mean(dx_hat) - x_hat mean(dx_hat x_hat)) / sigma, dx_hat = g gamma",
    ),
    "LayerNorm": (
        "normalization over each row's last axis: the gradient through its mean and variance",
        "dx = (dx_hat - mean(dx_hat) - x_hat mean(dx_hat x_hat)) / sigma, dx_hat = g gamma",
    ),
    # -- sequences ------------------------------------------------------------------------------
    "LSTM": (
        "backpropagation through time: the gate rules step by step, in reverse",
        "per step: dz = gates'(dh, dc); dh_prev = dz @ W_hh^T; dW = sum_t x_t^T dz_t",
    ),
    "GRU": (
        "backpropagation through time over GRU steps, in reverse",
        "per step: dz = gates'(dh); dh_prev = dz @ W_hh^T + dh * z; dW = sum_t x_t^T dz_t",
    ),
    "SimpleRNN": (
        "backpropagation through time over tanh steps, in reverse",
        "per step: dz = dh * (1 - h^2); dh_prev = dz @ W_hh^T; dW = sum_t x_t^T dz_t",
    ),
    "Embedding": (
        "a lookup: each row of the table gets the gradients of the positions that read it",
        "dL/dW[v] = sum of g at positions with id v",
    ),
    "BackwardHook": ("identity (where a module hook reads its input's gradient)", "dL/dx = g"),
}

LEAF_RULE = (
    "a leaf: the gradient is added into .grad (the optimizer reads it there)",
    ".grad += g",
)


def rule_for(fn: Function | type | None) -> tuple[str, str]:
    """(words, math) of the local gradient rule of a Function (instance or class); a leaf's
    rule for None."""
    if fn is None:
        return LEAF_RULE
    cls = fn if isinstance(fn, type) else type(fn)
    own = getattr(cls, "rule", None)
    if isinstance(own, tuple) and len(own) == 2:
        return own
    for klass in cls.__mro__:
        if klass.__name__ in RULES:
            return RULES[klass.__name__]
    doc = (cls.__doc__ or "").strip().splitlines()
    return (doc[0] if doc else "(no rule recorded for this op)", "")
