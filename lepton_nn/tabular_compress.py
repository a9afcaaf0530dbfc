"""``TabularModel.compress``: a pruned and/or int8 copy of a fitted tabular model (gradual
pruning while fine-tuning, int8 under an accuracy budget), kept out of ``tabular.py`` so that
file holds the model itself."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np

from . import optim
from .data import compute_sample_weight
from .errors import DataError
from .nn import Dense, Sequential

if TYPE_CHECKING:
    from .tabular import TabularModel

__all__ = ["compress_tabular", "fine_tune_pruned"]


def compress_tabular(
    model: TabularModel,
    data: Any = None,
    y: Any = None,
    *,
    prune: float = 0.0,
    structured: bool = False,
    fine_tune_epochs: int = 0,
    quantize: str | None = None,
    calibration_rows: int = 2048,
    max_accuracy_drop: float | None = None,
    scope: str = "layer",
) -> TabularModel:
    """:meth:`TabularModel.compress` (its docstring says what each setting does)."""
    from .compress import prune as prune_once
    from .compress import quantize as quantize_net
    from .compress import strip

    model._check()
    prune = float(prune)
    if not 0.0 <= prune < 1.0:
        raise ValueError(f"prune must be in [0, 1), got {prune}")
    if quantize not in (None, "dynamic", "static"):
        raise ValueError(f"quantize must be None, 'dynamic' or 'static', got {quantize!r}")
    if not isinstance(model.network, Sequential):
        raise DataError("compress() needs the network to be a Sequential")
    need_labels = (fine_tune_epochs > 0 and prune > 0) or max_accuracy_drop is not None
    X = target = None
    if data is not None:
        if need_labels:
            data, y = model._split_target(data, y)
        X = model.transform(data)
        if need_labels:
            target, _ = model._encode_target(np.asarray(y))
    if need_labels and X is None:
        raise DataError("compress(): fine-tuning and an accuracy budget need labelled data")
    if quantize == "static" and X is None:
        raise DataError("compress(): static int8 needs calibration rows (data)")

    net = copy.deepcopy(model.network)
    card: dict[str, Any] = {"prune": prune, "structured": bool(structured), "int8": quantize}
    if prune > 0:
        if fine_tune_epochs > 0:
            fine_tune_pruned(model, net, X, target, prune, structured, fine_tune_epochs, scope)
            card["fine_tune_epochs"] = int(fine_tune_epochs)
        else:
            prune_once(net, prune, structured=structured, scope=scope)
        net = strip(net)  # drop dead units (and the masks); the zeros stay
    net.eval()
    qm = None
    if quantize is not None:
        cal = None
        if X is not None:
            rng = np.random.default_rng(model.seed)
            pick = rng.permutation(len(X))[:calibration_rows]
            cal = X[np.sort(pick)]
        budget = {}
        if max_accuracy_drop is not None:
            budget = {
                "max_accuracy_drop": float(max_accuracy_drop),
                "eval_data": (X, model._codes(target), model._output_accuracy),
            }
        qm = quantize_net(net, cal, mode=quantize, **budget)
        card["int8_layers"] = sorted(qm.layers)
        if qm.scores:
            card["budget_scores"] = dict(qm.scores)
    weights = [m.weight.data for m in net.modules() if isinstance(m, Dense)]
    card["weights"] = int(sum(w.size for w in weights))
    card["nonzero_weights"] = int(sum(np.count_nonzero(w) for w in weights))
    new = copy.copy(model)
    new.network, new.quantized, new.compression = net, qm, card
    new.metrics_card = dict(model.metrics_card)
    return new


def fine_tune_pruned(model, net, X, target, sparsity, structured, epochs, scope) -> None:
    """Prune ``net`` gradually to ``sparsity`` while training it on (X, target)."""
    from .compress import PolynomialDecay, PruningCallback
    from .tabular import _LOSSES
    from .train import Trainer

    steps = epochs * max(1, -(-len(X) // model.batch_size))
    end = max(1, (2 * steps) // 3)
    schedule = PolynomialDecay(sparsity, 0.0, 0, end, frequency=max(1, end // 20))
    callback = PruningCallback(schedule, scope=scope, structured=structured)
    weights = None
    if model.class_weight is not None and model.task_ != "regression":
        weights = compute_sample_weight(target.astype(np.int64), model.class_weight)
    t = target.reshape(-1, 1) if model.task_ in ("binary", "regression") else target
    loss = _LOSSES[model.task_]
    opt = optim.AdamW(net.parameters(), lr=model.lr, weight_decay=model.weight_decay)
    net.train()
    Trainer(net, loss, opt).fit(
        X,
        t,
        epochs=epochs,
        batch_size=model.batch_size,
        callbacks=[callback, *model._monotone_callbacks(net)],
        sample_weight=weights,
        verbose=model.verbose,
        seed=model.seed,
    )
    net.eval()
