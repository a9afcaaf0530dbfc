"""Kernel backends: ``reference`` (NumPy), ``numba``, ``cython``.

The best available backend is chosen once, at first use: ``cython`` if the compiled extension
is installed, else ``numba`` if Numba is installed, else ``reference``. ``LEPTON_BACKEND``
(environment) or :func:`use_backend` / :func:`set_backend` force one. Compiled backends
subclass :class:`~lepton_nn.backend.reference.ReferenceBackend` and override only the kernels
they speed up; :func:`info` says which implementation each kernel resolves to.

Numba is imported only when the ``numba`` backend is first selected, never at package import.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator

from ..errors import BackendError
from .reference import ACT_CODE, ACTIVATIONS, ReferenceBackend

__all__ = [
    "ACTIVATIONS",
    "ACT_CODE",
    "ReferenceBackend",
    "available",
    "get_backend",
    "set_backend",
    "use_backend",
    "info",
    "kernel_names",
    "resolved",
]

_PREFERENCE = ("cython", "numba", "reference")
_MODULES = {
    "reference": (".reference", "ReferenceBackend"),
    "numba": (".numba_backend", "NumbaBackend"),
    "cython": (".cython_backend", "CythonBackend"),
}
_instances: dict[str, ReferenceBackend] = {}
_active: ReferenceBackend | None = None


def _probe(name: str) -> bool:
    """Whether backend ``name`` can be used here, without importing heavy modules."""
    if name == "reference":
        return True
    if name == "numba":
        return importlib.util.find_spec("numba") is not None
    if name == "cython":
        return _built()
    return False


@functools.cache
def _built() -> bool:
    """Whether the compiled extension is installed: looked up once (the runtime asks at
    every kernels() call of a load, ~16 filesystem lookups of ~25 us each)."""
    try:
        return importlib.util.find_spec("lepton_nn.kernels._dense") is not None
    except (ImportError, ValueError):
        return False


def available() -> list[str]:
    """Names of the backends usable on this machine, best first."""
    return [n for n in _PREFERENCE if _probe(n)]


def _instance(name: str) -> ReferenceBackend:
    if name not in _MODULES:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(_MODULES)}")
    if name not in _instances:
        if not _probe(name):
            raise BackendError(f"backend {name!r} is not available here (have: {available()})")
        modname, cls = _MODULES[name]
        try:
            mod = importlib.import_module(modname, __name__)
            _instances[name] = getattr(mod, cls)()
        except ImportError as exc:
            raise BackendError(f"backend {name!r} failed to load: {exc}") from exc
    return _instances[name]


def get_backend(allow_jit: bool = True) -> ReferenceBackend:
    """The active backend (chosen on first call).

    ``allow_jit=False`` (the inference runtime) never selects or imports Numba: it returns the
    active backend unless that is ``numba``, else the best ahead-of-time one (``cython``, else
    ``reference``, or the one ``LEPTON_BACKEND`` forces), leaving the active backend as it is.
    """
    global _active
    if not allow_jit and (_active is None or _active.name == "numba"):
        forced = os.environ.get("LEPTON_BACKEND", "").strip().lower()
        if _active is None and forced in ("cython", "reference"):
            return _instance(forced)
        if _probe("cython"):
            try:
                return _instance("cython")
            except BackendError:
                pass
        return _instance("reference")
    if _active is None:
        forced = os.environ.get("LEPTON_BACKEND", "").strip().lower()
        if forced:
            _active = _instance(forced)
        else:
            for name in available():
                try:
                    _active = _instance(name)
                    break
                except BackendError:
                    continue
    return _active


def set_backend(name: str) -> ReferenceBackend:
    """Make ``name`` the active backend for the rest of the process."""
    global _active
    _active = _instance(name)
    return _active


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[ReferenceBackend]:
    """Run a block on one backend: ``with use_backend("reference"): ...``."""
    global _active
    previous = get_backend()
    _active = _instance(name)
    try:
        yield _active
    finally:
        _active = previous


def resolved(b: ReferenceBackend, name: str) -> bool:
    """Whether backend ``b``'s kernel ``name`` is bound already. The compiled backend binds
    each kernel (importing its extension) at first use, so a kernel not yet bound is in no
    plan, and asking whether an op runs it need not import anything."""
    cb = sys.modules.get(f"{__name__}.cython_backend")
    if cb is None:
        return True
    entry = next((vars(c)[name] for c in type(b).__mro__ if name in vars(c)), None)
    return not isinstance(entry, cb._Compiled)


def kernel_names() -> list[str]:
    """Every kernel the reference backend defines (the full list of hot loops)."""
    return sorted(
        {
            k
            for cls in ReferenceBackend.__mro__[:-1]  # its op families' classes (not object)
            for k, v in vars(cls).items()
            if callable(v) and not k.startswith("_")
        }
    )


def info(backend: str | None = None) -> dict[str, str]:
    """Per kernel, which implementation is active: ``{"adam_step": "cython", ...}`` (a
    kernel that decides at run time says so through its ``implementation()``)."""
    b = _instance(backend) if backend else get_backend()
    out = {}
    for k in kernel_names():
        getattr(b, k)  # binds a compiled kernel not used yet (imports its extension)
        for cls in type(b).__mro__:
            if k in vars(cls):
                says = getattr(vars(cls)[k], "implementation", None)
                out[k] = says() if says else getattr(cls, "name", "reference")  # a family
                break
    return out
