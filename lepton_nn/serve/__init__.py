"""``lepton-nn serve``: models behind HTTP, with dynamic batching and streaming sessions.

Floor 8: serves through :mod:`lepton_nn.runtime` only (never autograd or layers). The web
parts, Starlette and uvicorn, are the optional extra ``serve`` (``pip install
"lepton_nn[serve]"``) and are imported only when a server is made::

    from lepton_nn.serve import ServeConfig, create_app, serve
    serve(ServeConfig(models=[("credit", "credit.lnn")]), port=8000)

:mod:`.app` has the endpoints, :mod:`.batcher` the batching, :mod:`.models` the loading and
the request/answer forms, :mod:`.metrics` the Prometheus counters.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServeConfig", "create_app", "serve"]


def _need_extra() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        from lepton_nn.errors import LeptonError

        raise LeptonError(
            f"serving needs the 'serve' extra ({exc.name} is missing): "
            'pip install "lepton_nn[serve]"'
        ) from None


def __getattr__(name: str) -> Any:
    if name in ("ServeConfig", "create_app"):
        _need_extra()
        from . import app

        return getattr(app, name)
    if name == "serve":
        from .server import serve

        return serve
    raise AttributeError(f"module 'lepton_nn.serve' has no attribute {name!r}")
