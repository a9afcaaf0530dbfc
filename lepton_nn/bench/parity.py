"""Accuracy parity (ACC): the same MLP trained by each engine on credit and digits; test
accuracy and ROC-AUC. Runs inside each engine's worker (:func:`parity`); the report compares
the engines (:func:`lepton_nn.bench.report.parity_summary`).
"""

from __future__ import annotations

import time

import numpy as np

from .engines.handwritten_numpy import NumpyMLP
from .engines.lepton import lepton_backend, lepton_mlp
from .engines.pytorch import torch_mlp
from .engines.tensorflow_keras import keras_adam, keras_loss, keras_mlp
from .workloads import ADAM, glorot_weights

PARITY = {
    "credit": {"hidden": (64, 32), "batch": 64, "epochs": 30, "quick_epochs": 6},
    "digits": {"hidden": (64, 32), "batch": 64, "epochs": 40, "quick_epochs": 8},
}


def parity_datasets() -> dict[str, dict]:
    """Train/test splits (float32 features, integer labels) prepared with lepton_nn.data.

    credit: ``credit_data.csv`` (bundled), median imputation, one-hot, standard scaling fit on
    the training rows, positive class ``bad``. digits: ``digits.csv`` (bundled), pixels / 16.
    Stratified 75/25 split, seed 0.
    """
    from lepton_nn import datasets
    from lepton_nn.data import LabelEncoder, Preprocessor, read_csv, train_test_split

    out: dict[str, dict] = {}
    table = datasets.load_credit()
    y = LabelEncoder(positive="bad").fit_transform(table.target).astype(np.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.25, stratify=y, seed=0)
    pre = Preprocessor().fit(table.take(tr))
    out["credit"] = {
        "x_train": pre.transform(table.take(tr)).astype(np.float32),
        "y_train": y[tr],
        "x_test": pre.transform(table.take(te)).astype(np.float32),
        "y_test": y[te],
        "loss": "bce",
        "source": "credit_data.csv (bundled)",
    }
    t = read_csv(datasets.path("digits"), target="digit")
    yd = np.asarray(t.target).astype(np.int64)
    x = (np.asarray(t.to_numpy(), np.float64) / 16.0).astype(np.float32)
    tr, te = train_test_split(np.arange(len(yd)), test_size=0.25, stratify=yd, seed=0)
    out["digits"] = {
        "x_train": x[tr],
        "y_train": yd[tr],
        "x_test": x[te],
        "y_test": yd[te],
        "loss": "ce",
        "source": "digits.csv (bundled)",
    }
    return out


def _scores(loss: str, logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    if loss == "bce":
        return 1.0 / (1.0 + np.exp(-logits.reshape(-1)))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _metrics(loss: str, y: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    from lepton_nn import metrics

    p = _scores(loss, logits)
    pred = (p >= 0.5).astype(np.int64) if loss == "bce" else p.argmax(axis=1)
    return {"accuracy": metrics.accuracy(y, pred), "roc_auc": float(metrics.roc_auc(y, p))}


def _epoch_orders(n: int, epochs: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(20_000 + seed)
    return [rng.permutation(n) for _ in range(epochs)]


def parity(engine: str, quick: bool = False, seeds: int | None = None) -> list[dict]:
    """Train the parity models with ``engine``; one row per (dataset, mode, seed).

    Modes: ``shared``: identical initial weights (Glorot uniform from NumPy) and identical
    batch order in every engine (differences are numerics only). ``own``: each engine's own
    Glorot-uniform initializer and shuffling, seeded (differences are noise plus numerics):
    ``Trainer.fit`` for lepton_nn, ``Model.fit`` for Keras, a standard loop for PyTorch.
    ``quick`` runs the shared mode only, with fewer epochs.
    """
    n_seeds = seeds if seeds is not None else 3
    rows = []
    for name, data in parity_datasets().items():
        cfg = PARITY[name]
        epochs = cfg["quick_epochs"] if quick else cfg["epochs"]
        n_out = 1 if data["loss"] == "bce" else int(data["y_train"].max()) + 1
        sizes = (data["x_train"].shape[1], *cfg["hidden"], n_out)
        for mode in ("shared",) if quick else ("shared", "own"):
            for seed in range(n_seeds if mode == "own" else 1):
                t = time.perf_counter()
                logits = _parity_train(engine, mode, data, sizes, cfg["batch"], epochs, seed)
                rows.append(
                    {
                        "dataset": name,
                        "source": data["source"],
                        "mode": mode,
                        "seed": seed,
                        "epochs": epochs,
                        "sizes": list(sizes),
                        "seconds": time.perf_counter() - t,
                        **_metrics(data["loss"], data["y_test"], logits),
                    }
                )
    return rows


def _parity_train(engine, mode, data, sizes, batch, epochs, seed) -> np.ndarray:
    """Train and return the test logits."""
    x, y, x_test, loss = data["x_train"], data["y_train"], data["x_test"], data["loss"]
    yt = y.astype(np.float32).reshape(-1, 1) if loss == "bce" else y
    shared = mode == "shared"
    weights = glorot_weights(sizes, seed) if shared else None
    orders = _epoch_orders(len(x), epochs, seed) if shared else None
    if engine.startswith("lepton"):
        return _parity_lepton(
            engine, x, yt, x_test, loss, sizes, batch, epochs, seed, weights, orders
        )
    if engine == "numpy":
        net = NumpyMLP(weights or glorot_weights(sizes, 1000 + seed), loss)
        for order in orders or _epoch_orders(len(x), epochs, 1000 + seed):
            for s in range(0, len(x), batch):
                idx = order[s : s + batch]
                net.step(x[idx], yt[idx])
        return net.predict(x_test)
    if engine == "torch":
        return _parity_torch(x, yt, x_test, loss, sizes, batch, epochs, seed, weights, orders)
    if engine == "tensorflow":
        return _parity_keras(x, yt, x_test, loss, sizes, batch, epochs, seed, weights, orders)
    raise ValueError(f"{engine} has no parity run")


def _parity_lepton(engine, x, y, x_test, loss, sizes, batch, epochs, seed, weights, orders):
    import lepton_nn
    from lepton_nn.train import Trainer

    lepton_backend(engine.partition(":")[2] or None)
    lepton_nn.set_seed(seed)
    if weights is not None:
        model = lepton_mlp(sizes, weights)
    else:
        from lepton_nn import nn

        acts = ["relu"] * (len(sizes) - 2) + [None]
        model = nn.Sequential([nn.Dense(n, a) for n, a in zip(sizes[1:], acts)])
    trainer = Trainer(
        model,
        "bce" if loss == "bce" else "cross_entropy",
        "adam",
        lr=ADAM["lr"],
        optimizer_kwargs={"betas": ADAM["betas"], "eps": ADAM["eps"]},
    )
    if orders is not None:
        for order in orders:
            trainer.fit(x[order], y[order], epochs=1, batch_size=batch, shuffle=False, verbose=0)
    else:
        trainer.fit(x, y, epochs=epochs, batch_size=batch, shuffle=True, verbose=0, seed=seed)
    return trainer.predict(x_test)


def _parity_torch(x, y, x_test, loss, sizes, batch, epochs, seed, weights, orders):
    import torch

    torch.manual_seed(seed)
    if weights is not None:
        model = torch_mlp(sizes, weights)
    else:
        model = torch_mlp(sizes, glorot_weights(sizes))  # shapes only; re-initialized below
        for m in model:
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.xavier_uniform_(m.weight)
                torch.nn.init.zeros_(m.bias)
    opt = torch.optim.Adam(model.parameters(), lr=ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"])
    loss_fn = torch.nn.BCEWithLogitsLoss() if loss == "bce" else torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for e in range(epochs):
        order = torch.from_numpy(orders[e]) if orders is not None else torch.randperm(len(x))
        for s in range(0, len(x), batch):
            idx = order[s : s + batch]
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(x_test)).numpy()


def _parity_keras(x, y, x_test, loss, sizes, batch, epochs, seed, weights, orders):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras_mlp(sizes, weights)
    model.compile(optimizer=keras_adam(), loss=keras_loss(loss))
    if orders is not None:
        for order in orders:
            model.fit(x[order], y[order], batch_size=batch, epochs=1, shuffle=False, verbose=0)
    else:
        model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=True, verbose=0)
    return np.asarray(model.predict(x_test, batch_size=1024, verbose=0))
