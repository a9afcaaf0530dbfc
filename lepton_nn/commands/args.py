"""Argument types and pre-flight checks for ``lepton-nn``.

Every type raises ``argparse.ArgumentTypeError`` (one line, exit 2 through the parser); the
checks raise :class:`~lepton_nn.errors.LeptonError` *before* any data is read or trained on.
"""

from __future__ import annotations

import argparse
import math
import os

import numpy as np

from ..errors import LeptonError

# The CLI's parameter budget: a network larger than this is refused before it is built.
MAX_PARAMETERS = 20_000_000


def int_at_least(low: int):
    """An int type refusing values below ``low`` (``--epochs``: 1, ``--seed``: 0)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
        return v

    parse.__name__ = f"integer >= {low}"
    return parse


def float_in(low: float, high: float, low_open: bool = False, high_open: bool = False):
    """A finite float type in ``[low, high]`` (each end open when asked)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        bad = (
            not math.isfinite(v)
            or v < low
            or v > high
            or (low_open and v == low)
            or (high_open and v == high)
        )
        if bad:
            lo, hi = "(" if low_open else "[", ")" if high_open else "]"
            raise argparse.ArgumentTypeError(f"must be a finite number in {lo}{low}, {high}{hi}")
        return v

    parse.__name__ = "number"
    return parse


positive_int = int_at_least(1)
nonneg_int = int_at_least(0)
positive_float = float_in(0.0, math.inf, low_open=True, high_open=True)
nonneg_float = float_in(0.0, math.inf, high_open=True)
fraction = float_in(0.0, 1.0, high_open=True)  # [0, 1)


def cv_folds(text: str) -> int:
    """``--cv``: 0 (none) or at least 2 folds."""
    v = nonneg_int(text)
    if v == 1:
        raise argparse.ArgumentTypeError("takes 0 (no cross-validation) or at least 2 folds")
    return v


def hidden_sizes(text: str) -> tuple[int, ...]:
    """Hidden layer sizes, first to last: ``64x32`` (``64,32`` is read the same way)."""
    parts = text.replace(",", "x").split("x")
    try:
        sizes = tuple(int(s) for s in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"takes hidden layer sizes like 64x32, got {text!r}"
        ) from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"takes positive sizes like 64x32, got {text!r}")
    return sizes


def format_hidden(sizes) -> str:
    """``(64, 32)`` (or ``"64x32"``) -> ``"64x32"``."""
    if isinstance(sizes, str):
        sizes = hidden_sizes(sizes)
    return "x".join(str(int(h)) for h in sizes)


def check_output(path: str | None, flag: str = "-o") -> None:
    """Refuse an output path that cannot be written, before any work: its folder must exist
    and it must not itself be a folder."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise LeptonError(f"{flag} {path}: is a folder; give a file name")
    if not os.path.isdir(folder):
        raise LeptonError(f"{flag} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise LeptonError(f"{flag} {path}: folder {folder} is not writable")


def mlp_parameters(n_in: int, hidden: tuple[int, ...], n_out: int) -> int:
    """Weights and biases of ``Dense`` layers n_in -> hidden... -> n_out."""
    sizes = [n_in, *hidden, n_out]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def check_budget(n_in: int, hidden: tuple[int, ...], n_out: int = 1) -> None:
    """Refuse a network over :data:`MAX_PARAMETERS` before anything is allocated. ``n_in`` may
    be a lower bound (the number of raw columns: one-hot encoding only adds inputs)."""
    n = mlp_parameters(n_in, tuple(hidden), n_out)
    if n > MAX_PARAMETERS:
        raise LeptonError(
            f"--hidden {format_hidden(hidden)}: at least {n:,} parameters, over the budget of "
            f"{MAX_PARAMETERS:,} (lepton_nn.commands.args.MAX_PARAMETERS)"
        )


def positive_line(labels, given, y=None) -> str | None:
    """What ``train`` (in memory, streamed, private) and ``tune`` print for a two-class
    target: the positive class (encoded 1: the reported probability, precision and recall
    are its) and why; None for other targets. One rule, ``LabelEncoder``'s: ``--positive``,
    else the larger of the two sorted labels (as scikit-learn, R and H2O), which does not
    change with the data's class shares. ``y`` (the training labels): for text labels, when
    that default is the more common class, the line says how to score the rarer one."""
    pos = None if labels is None else labels.positive_
    if pos is None:
        return None
    if given is not None:
        return f"positive class: {pos!r} (--positive)"
    line = f"positive class: {pos!r} (the larger of the two sorted labels; "
    other = labels.classes_[0].item() if hasattr(labels.classes_[0], "item") else labels.classes_[0]
    share = 0.0
    if y is not None and isinstance(pos, str):
        share = float(np.mean(np.asarray(y).astype(str) == pos))
    if share <= 0.5:
        return line + "--positive LABEL chooses another)"
    return line + (
        f"it is the more common class, {share:.0%} of the rows: to score the rarer one "
        f"(a default, a fraud...) give --positive {other})"
    )


def add_verbosity(p: argparse.ArgumentParser) -> None:
    """``--quiet`` / ``--verbose``: ``args.verbose`` 0, 1 (default) or 2."""
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "-q",
        "--quiet",
        dest="verbose",
        action="store_const",
        const=0,
        help="print only the results, no progress",
    )
    g.add_argument(
        "-v",
        "--verbose",
        dest="verbose",
        action="store_const",
        const=2,
        help="a plain line per epoch (or trial) even on a terminal",
    )
    p.set_defaults(verbose=1)
