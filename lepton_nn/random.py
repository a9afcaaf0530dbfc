"""One seed for every random stream of the library.

Layers (initializers, dropout), data splits and shuffling draw from generators made by
:func:`rng` (or spawned from it), so ``set_seed(s)`` makes a whole run repeatable.
"""

from __future__ import annotations

import numpy as np

_seed: int | None = None
_root = np.random.default_rng()


def set_seed(seed: int | None) -> None:
    """Reseed the library's global generator (``None`` draws fresh entropy)."""
    global _seed, _root
    _seed = None if seed is None else int(seed)
    _root = np.random.default_rng(_seed)


def get_seed() -> int | None:
    """The seed last given to :func:`set_seed` (``None`` if never seeded)."""
    return _seed


def rng(seed: int | None = None) -> np.random.Generator:
    """The global generator, or a fresh one for an explicit ``seed``."""
    return _root if seed is None else np.random.default_rng(seed)


def spawn() -> np.random.Generator:
    """An independent child generator drawn from the global stream (for workers, splits)."""
    return np.random.default_rng(_root.integers(0, 2**63 - 1))
