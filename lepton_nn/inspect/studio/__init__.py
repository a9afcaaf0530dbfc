"""Floor 8: the studio, a local web page that shows a model learning (issue 22).

- :func:`studio` ``(model, data=(x, y), port=0, epochs=...)``: serve the page on
  ``127.0.0.1`` (and, with ``epochs``, train in a background thread while it watches);
  ``model`` may also be a fitted ``TabularModel`` (on raw rows) or a ``.lnn`` file (through
  the runtime alone);
- :class:`Studio`: the same as a ``fit`` callback, ``fit(..., callbacks=[Studio()])``; in a
  notebook either object shows the page inline.

The page (our own HTML, SVG, CSS and JavaScript in ``assets/``, nothing fetched from
elsewhere) draws the layer graph, each layer opening into the ops inside it (their shapes,
values and gradients, :mod:`.ops_view`); a clicked layer's forward formula, local
derivative, ops inside and tensors (x, y, dL/dy, dL/dx, W, dL/dW: in full, or as heat maps
and histograms);
the batch losses, epoch metrics and learning rate, per-layer activation and gradient
histograms, dead-ReLU share and update/weight ratio streamed while ``fit`` runs (server-sent
events), with pause / step one batch / resume; the backward pass of one batch one node at a
time (or through the ops inside the layers); a row's attributions and the global
importances; an image's saliency (:mod:`.saliency`) and feature maps. Modules:
:mod:`.session` (the callback, events, control), :mod:`.server` (HTTP), :mod:`.model_view`,
:mod:`.ops_view` and :mod:`.runtime_view` (a network as JSON-ready data),
:mod:`.tensor_view`, :mod:`.attributions`, :mod:`.saliency`. Needs the ``serve`` extra
(Starlette and uvicorn), imported when the server starts. Guide: ``docs/studio.md``.
"""

from __future__ import annotations

import os
import sys
import threading
import types
from typing import Any

from .session import Studio

__all__ = ["Studio", "studio"]


def studio(
    model: Any,
    data: Any = None,
    port: int = 0,
    *,
    loss: Any = "mse",
    optimizer: str = "adam",
    lr: float | None = None,
    epochs: int = 0,
    batch_size: int = 32,
    paused: bool = False,
    sample_rows: int = 64,
    feature_names: list[str] | None = None,
    every: int = 1,
) -> Studio:
    """Start the studio for ``model`` and return it (``.url``, ``.close()``).

    ``model``: a network (:class:`~lepton_nn.nn.Module`), or a ``.lnn`` path or a
    :class:`~lepton_nn.runtime.InferenceModel`, shown through the runtime alone (graph,
    weights, activations on the sample rows; no gradients, no training code). A network of
    several inputs (graph model or runtime) takes ``x`` as a dict by input name or a list in
    order (shown, not trained: the ``Trainer`` fits models of one input).

    ``data``: ``x`` or ``(x, y)``; its first ``sample_rows`` rows give the graph's shapes and
    the backprop stepper's batch, the node panel's tensors, the attributions (tabular
    input, columns named by ``feature_names``) and the feature maps (images). ``epochs`` > 0
    (needs ``y``): train with a ``Trainer`` (``loss``, ``optimizer``, ``lr``, ``batch_size``)
    in a background thread (``.fit_thread``; ``.history`` when done), paused before the first
    batch if ``paused``; ``every``: record every ``every``-th batch at most (see
    :class:`Studio`). In a notebook, the returned object shows the page inline.
    """
    if isinstance(model, (str, os.PathLike)):  # a trained file: through the runtime alone
        from ...runtime import load

        model = load(model)
    if _is_tabular(model):
        if epochs:
            raise ValueError("a TabularModel trains with its own fit; the studio shows it after")
        return _tabular(model, data, port, sample_rows)
    x, y = (data if isinstance(data, tuple) else (data, None)) if data is not None else (None, None)
    x = _rows(model, x)
    sample = None if x is None else (x[:sample_rows], None if y is None else y[:sample_rows])
    st = Studio(
        port=port, model=model, sample=sample, loss=loss, every=every, feature_names=feature_names
    )
    st.prepare()
    st.start()
    st.history = None
    st.fit_thread = None
    if epochs:
        if y is None:
            raise ValueError("training in the studio needs labels: data=(x, y)")
        if len(getattr(model, "input_names", None) or []) > 1:
            raise ValueError(
                "the Trainer fits models of one input: the studio shows a model of several "
                "inputs (epochs=0) without training it"
            )
        from ...train import Trainer

        trainer = Trainer(model, loss=loss, optimizer=optimizer, lr=lr)
        if paused:
            st.control("pause")

        def run() -> None:
            st.history = trainer.fit(
                x, y, epochs=epochs, batch_size=batch_size, callbacks=[st], verbose=0
            )

        st.fit_thread = threading.Thread(target=run, daemon=True, name="studio-fit")
        st.fit_thread.start()
    return st


def _rows(model: Any, x: Any) -> Any:
    """The sample rows of a network of several inputs (a dict by name or a list in order)
    held as one :class:`.rows.Rows`; anything else as it is."""
    from . import rows, runtime_view

    return (runtime_view if runtime_view.is_runtime(model) else rows).rows_of(model, x)


def _is_tabular(model: Any) -> bool:
    from ...tabular import TabularModel

    return isinstance(model, TabularModel)


def _tabular(model: Any, data: Any, port: int, sample_rows: int) -> Studio:
    """A fitted TabularModel on raw rows (a Table, with its target or ``(table, y)``): its
    network on the preprocessed rows, with the loss and encoded targets it was trained on,
    and attributions and importances per raw column (:mod:`lepton_nn.explain` on the model)."""
    import numpy as np

    model._check()
    table, y = data if isinstance(data, tuple) else (data, getattr(data, "target", None))
    if table is None:
        raise ValueError("the studio shows a TabularModel on raw rows: data=table")
    rows = table.take(np.arange(min(sample_rows, len(table))))
    y = None if y is None else np.asarray(y)[: len(rows)]
    x = model.transform(rows)
    target, loss = (None, None) if y is None else model._encode_target(y)
    if target is not None and model.task_ != "multiclass":
        target = target.reshape(len(target), 1)
    st = Studio(port=port, model=model.network, sample=(x, target), loss=loss)
    st.explained = (model, rows, y)
    st.prepare()
    st.start()
    st.history = st.fit_thread = None
    return st


class _Room(types.ModuleType):
    """``lepton_nn.inspect.studio`` is this package and the function at once: Python sets a
    package on its parent under its own name, so the module calls :func:`studio`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Studio:
        return studio(*args, **kwargs)


sys.modules[__name__].__class__ = _Room
