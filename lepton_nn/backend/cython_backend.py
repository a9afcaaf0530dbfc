"""Kernels compiled ahead of time from ``kernels/*.pyx`` (C with SIMD where it pays).

Each extension module is optional: a kernel whose module did not build falls back, by
inheritance, to its NumPy twin in :mod:`lepton_nn.backend.reference`.
"""

from __future__ import annotations

import importlib

from .reference import ReferenceBackend


def _load(name):
    try:
        return importlib.import_module(f"lepton_nn.kernels._{name}")
    except ImportError:
        return None


_dense = _load("dense")
_conv = _load("conv")
_recurrent = _load("recurrent")
_qgemm = _load("qgemm")
_sparse = _load("sparse")


class CythonBackend(ReferenceBackend):
    """Ahead-of-time compiled kernels; no first-call stall.

    Each kernel below is a compiled function bound under the name and signature of its twin
    ``ReferenceBackend.<name>`` in reference.py (the readable spec); its source is the ``.pyx``
    named in the group's header. (Compiled docstrings cannot point back, so these lines do.)
    """

    name = "cython"

    # -- dense epilogue, softmax cross-entropy, optimizers (kernels/dense.pyx) -------------
    if _dense is not None:  # same signatures as the reference: bound straight, no wrapper
        bias_act_forward = staticmethod(_dense.bias_act_forward)
        bias_act_backward = staticmethod(_dense.bias_act_backward)
        softmax_xent_forward = staticmethod(_dense.softmax_xent_forward)
        softmax_xent_backward = staticmethod(_dense.softmax_xent_backward)
        adam_step = staticmethod(_dense.adam_step)

    # -- int8 quantized matmul (kernels/qgemm.pyx) ------------------------------------------
    if _qgemm is not None:  # same signatures as the reference; the wrappers validate
        quantize_rows = staticmethod(_qgemm.quantize_rows)
        qpack_weights = staticmethod(_qgemm.pack_weights)
        qlinear = staticmethod(_qgemm.qlinear)
        qgemm_s32 = staticmethod(_qgemm.qgemm_s32)

    # -- sparse matmul (kernels/sparse.pyx) --------------------------------------------------
    if _sparse is not None:
        to_csr = staticmethod(_sparse.to_csr)
        sparse_linear = staticmethod(_sparse.sparse_linear)

    # -- convolution and pooling (kernels/conv.pyx) -----------------------------------------
    if _conv is not None:  # same signatures as the reference: bound straight
        im2col = staticmethod(_conv.im2col)
        col2im = staticmethod(_conv.col2im)
        maxpool2d_forward = staticmethod(_conv.maxpool2d_forward)
        maxpool2d_backward = staticmethod(_conv.maxpool2d_backward)
        avgpool2d_forward = staticmethod(_conv.avgpool2d_forward)
        avgpool2d_backward = staticmethod(_conv.avgpool2d_backward)

    # -- recurrent cells (kernels/recurrent.pyx) --------------------------------------------
    if _recurrent is not None:  # same signatures as the reference: bound straight
        lstm_step_forward = staticmethod(_recurrent.lstm_step_forward)
        lstm_step_backward = staticmethod(_recurrent.lstm_step_backward)
        gru_step_forward = staticmethod(_recurrent.gru_step_forward)
        gru_step_backward = staticmethod(_recurrent.gru_step_backward)
        rnn_step_forward = staticmethod(_recurrent.rnn_step_forward)
        rnn_step_backward = staticmethod(_recurrent.rnn_step_backward)
