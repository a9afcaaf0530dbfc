"""Saliency maps of one image for the studio page: where the chosen output looks.

For image x (C, H, W) and the score f = output column ``target`` (default: the only column,
else the predicted class), in eval mode:

- gradient: G = df/dx (C, H, W), one backward pass; the map is max_c |G[c]| (H, W), the
  sensitivity of f to each pixel (Simonyan et al.'s saliency);
- integrated gradients from the black image x0 = 0 (:func:`lepton_nn.explain.integrated_gradients`,
  ``STEPS`` trapezoid intervals, the path's images in one batch): A = x * mean over the path
  of df/dx, summed over channels (H, W); the attributions sum to f(x) - f(0) (completeness,
  the gap returned as ``delta``).

Maps are sent as heat maps of at most 64 x 64 cells (block means); ``image`` is the mean over
channels, for the page to draw the saliency over it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import explain as E
from ...autograd import Tensor, enable_grad, no_grad
from ...nn.module import Module
from .rows import Rows
from .tensor_view import heat

__all__ = ["STEPS", "class_gradient", "saliency_maps", "for_studio"]

STEPS = 16
CELLS = 64


def _frozen_grads(model: Module) -> list[tuple[Any, Any, bool]]:
    return [(p, p.grad, p.requires_grad) for p in model.parameters()]


def class_gradient(model: Module, image: np.ndarray, target: int) -> tuple[np.ndarray, float]:
    """(df/dx, f) for one image (C, H, W), f = model(x)[0, target], in eval mode. The
    parameters' ``.grad`` and modes are left as they were."""
    saved = _frozen_grads(model)
    was = model.training
    model.eval()
    try:
        for p, _, _ in saved:
            p.requires_grad = False
        with enable_grad():
            x = Tensor(np.asarray(image, model_dtype(model))[None], requires_grad=True)
            out = model(x)
            f = out.reshape(1, -1)[:, int(target)].sum()
            f.backward()
        return np.array(x.grad[0]), float(f.data)
    finally:
        model.train(was)
        for p, g, rg in saved:
            p.grad, p.requires_grad = g, rg


def model_dtype(model: Module) -> Any:
    ps = list(model.parameters())
    return ps[0].data.dtype if ps else np.float32


def saliency_maps(model: Module, x: Any, index: int = 0, target: int | None = None) -> dict:
    """``{"index", "target", "outputs", "score", "image", "gradient", "integrated",
    "delta", "shape"}`` for sample image ``index`` of ``x`` (N, C, H, W) (IndexError when out
    of range, ValueError for input that is not images or a target that is not an output)."""
    if isinstance(x, Rows):
        raise ValueError("saliency maps are drawn for a network of one image input")
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"saliency maps are drawn for images (N, C, H, W), got {x.shape}")
    if not 0 <= index < len(x):
        raise IndexError(f"image {index} is out of range: the sample has {len(x)} rows")
    image = x[index]
    was = model.training
    model.eval()
    try:
        with no_grad():
            out = np.asarray(model(image[None].astype(model_dtype(model))).data).reshape(-1)
    finally:
        model.train(was)
    k = int(np.argmax(out)) if target is None and out.size > 1 else int(target or 0)
    if not 0 <= k < out.size:
        raise ValueError(f"target {k} is not an output column (0..{out.size - 1})")
    grad, score = class_gradient(model, image, k)
    ig, delta = E.integrated_gradients(model, image[None], steps=STEPS, target=k, return_delta=True)
    return {
        "index": int(index),
        "target": k,
        "outputs": [float(v) for v in out],
        "score": score,
        "shape": [int(n) for n in image.shape],
        "image": heat(image.astype(np.float64).mean(axis=0), CELLS, CELLS),
        "gradient": heat(np.abs(grad).max(axis=0), CELLS, CELLS),
        "integrated": heat(ig[0].sum(axis=0), CELLS, CELLS),
        "delta": float(delta[0]),
        "method": f"gradient df/dx (max over channels of |.|); integrated gradients from the "
        f"black image, {STEPS} steps (summed over channels)",
    }


def for_studio(st: Any, row: int, target: int | None) -> dict:
    """:func:`saliency_maps` of sample image ``row``, run where it cannot race ``fit``."""
    st._needs_autograd("saliency maps")
    x = st.sample_x()
    return st.on_model(lambda: saliency_maps(st.model, x, int(row), target))
