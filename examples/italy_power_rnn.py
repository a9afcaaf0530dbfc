"""A GRU classifies daily power-demand curves (UCR ItalyPowerDemand: winter vs summer).

    python examples/italy_power_rnn.py [--epochs 150] [--seed 0] [--prune 0.7] [--int8 dynamic]
        [--data FILE]

Reads the copy bundled with lepton_nn (``lepton_nn.datasets.load("italy_power_demand")``), or
FILE (the same long-format CSV, as ``lepton-nn datasets export italy_power_demand`` writes).

The archive's own split: 67 training series, 1,029 test series, 24 hourly steps each
(already z-normalized per series). Network: GRU(32) over the 24 steps -> Dense 2, trained
full-batch with Adam on softmax cross-entropy in a plain loop. Prints the test accuracy
(>= 95 % expected) and the time taken. ``--prune S`` prunes by magnitude while it trains:
every weight matrix (the GRU's input and recurrent weights and the Dense head) goes from 0
to the fraction S of zeros between the first and the second third of the epochs
(``PolynomialDecay`` through a ``PruningCallback``), the last third fine-tuning the rest.
``--int8 dynamic`` (or ``static``) then quantizes the trained network, the GRU's matrices
included, serves it with ``lepton_nn.runtime`` and prints its accuracy and file sizes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _serve import serve_int8  # examples/_serve.py

import lepton_nn as ln
from lepton_nn import Tensor, datasets, losses
from lepton_nn.compress import PolynomialDecay, PruningCallback, get_pruner
from lepton_nn.datasets import load_series
from lepton_nn.nn import GRU, Dense, Sequential
from lepton_nn.optim import Adam


def accuracy(model, x, y) -> float:
    model.eval()
    with ln.no_grad():
        pred = model(Tensor(x)).data.argmax(axis=1)
    model.train()
    return float((pred == y).mean())


def main(argv=None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, help="CSV to read (default: the bundled copy)")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prune", type=float, default=0.0, help="final fraction of zero weights")
    ap.add_argument("--int8", choices=["static", "dynamic"], help="also quantize and serve it")
    args = ap.parse_args(argv)

    ln.set_seed(args.seed)
    data = load_series(args.data) if args.data else datasets.load("italy_power_demand")
    (x_tr, lab_tr), (x_te, lab_te) = data["train"], data["test"]
    classes = np.unique(lab_tr)
    y_tr, y_te = np.searchsorted(classes, lab_tr), np.searchsorted(classes, lab_te)
    model = Sequential([GRU(32), Dense(len(classes))])
    model.build((None, *x_tr.shape[1:]))
    opt = Adam(model.parameters(), lr=args.lr)
    pruning = None
    if args.prune > 0:
        third = args.epochs // 3
        schedule = PolynomialDecay(args.prune, begin_step=third, end_step=2 * third, frequency=5)
        pruning = PruningCallback(schedule, model=model, optimizer=opt)
        pruning.on_train_begin()
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        loss = losses.cross_entropy(model(Tensor(x_tr)), y_tr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if pruning is not None:  # one step per epoch (full batch): step index epoch - 1
            pruning.on_batch_end(epoch - 1)
        if epoch % 50 == 0 or epoch == args.epochs:
            print(
                f"epoch {epoch:4d}  loss {loss.item():.4f}  "
                f"test accuracy {accuracy(model, x_te, y_te):.4f}"
            )
    seconds = time.perf_counter() - start
    if pruning is not None:
        pruning.on_train_end()
        print(f"pruned: {get_pruner(model).sparsity:.1%} of the weights are zero")
    acc = accuracy(model, x_te, y_te)
    print(
        f"ItalyPowerDemand GRU: test accuracy {acc:.4f} on {len(y_te)} series "
        f"(trained on {len(y_tr)}) in {seconds:.1f} s"
    )
    if args.int8:
        return serve_int8(model.eval(), x_tr, x_te, y_te, args.int8)
    return acc


if __name__ == "__main__":
    main()
