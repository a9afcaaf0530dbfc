"""A small CNN on the 8x8 handwritten digits (UCI, as shipped by scikit-learn).

    python examples/digits_cnn.py [--epochs 30] [--seed 0] [--int8 static] [--data FILE]

Reads the copy of digits.csv bundled with lepton_nn (``lepton_nn.datasets``), or FILE.

Stratified 25 % hold-out; the network is
    (1, 8, 8) -> Conv 3x3 32 same, BatchNorm, ReLU -> MaxPool 2 -> Conv 3x3 64 same, ReLU
    -> MaxPool 2 -> Flatten (64*2*2) -> Dense 64 ReLU -> Dropout 0.3 -> Dense 10
trained with Adam on softmax cross-entropy, in a plain loop. Prints the test accuracy
(>= 98 % expected) and the time taken. ``--int8 static`` (or ``dynamic``) then quantizes the
trained network after training (``compress.quantize``, calibrated on 500 training images),
saves both files, serves the int8 one with ``lepton_nn.runtime`` and prints its accuracy
and the file sizes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _serve import serve_int8  # examples/_serve.py

import lepton_nn as ln
from lepton_nn import Tensor, datasets, losses
from lepton_nn.data.split import train_test_split
from lepton_nn.nn import BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sequential
from lepton_nn.optim import Adam


def load(path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, 8, 8) scaled to [0, 1] and labels (N,) from digits.csv (the bundled copy
    when ``path`` is None)."""
    table = np.loadtxt(path or datasets.path("digits"), delimiter=",", skiprows=1)
    x = (table[:, :64] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return x, table[:, 64].astype(np.int64)


def build_model() -> Sequential:
    return Sequential(
        [
            Conv2D(32, 3, padding="same"),
            BatchNorm(),
            ReLU(),
            MaxPool2D(2),
            Conv2D(64, 3, padding="same", activation="relu"),
            MaxPool2D(2),
            Flatten(),
            Dense(64, activation="relu"),
            Dropout(0.3),
            Dense(10),
        ]
    )


def accuracy(model, x, y, batch=256) -> float:
    model.eval()
    with ln.no_grad():
        pred = np.concatenate(
            [model(Tensor(x[i : i + batch])).data.argmax(axis=1) for i in range(0, len(x), batch)]
        )
    model.train()
    return float((pred == y).mean())


def main(argv=None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, help="digits.csv to read (default: the bundled copy)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--int8", choices=["static", "dynamic"], help="also quantize and serve it")
    args = ap.parse_args(argv)

    ln.set_seed(args.seed)
    x, y = load(args.data)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, stratify=y, seed=args.seed)
    model = build_model()
    model.build((None, 1, 8, 8))
    opt = Adam(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(x_tr))
        total = 0.0
        for i in range(0, len(order), args.batch):
            idx = order[i : i + args.batch]
            loss = losses.cross_entropy(model(Tensor(x_tr[idx])), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if epoch % 5 == 0 or epoch == args.epochs:
            print(
                f"epoch {epoch:3d}  loss {total / len(x_tr):.4f}  "
                f"test accuracy {accuracy(model, x_te, y_te):.4f}"
            )
    seconds = time.perf_counter() - start
    acc = accuracy(model, x_te, y_te)
    print(f"digits CNN: test accuracy {acc:.4f} on {len(y_te)} images, trained in {seconds:.1f} s")
    if args.int8:
        return serve_int8(model.eval(), x_tr[:500], x_te, y_te, args.int8)
    return acc


if __name__ == "__main__":
    main()
