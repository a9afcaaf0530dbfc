"""Whether operations record a graph (``no_grad()`` turns recording off)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class _GradMode(threading.local):
    enabled = True  # each thread starts recording (a class default: no per-thread setup)


_state = _GradMode()


def is_grad_enabled() -> bool:
    return _state.enabled


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Inside the block, results of operations carry no graph and need no memory for it."""
    prev = is_grad_enabled()
    _state.enabled = False
    try:
        yield
    finally:
        _state.enabled = prev


@contextlib.contextmanager
def enable_grad() -> Iterator[None]:
    prev = is_grad_enabled()
    _state.enabled = True
    try:
        yield
    finally:
        _state.enabled = prev
