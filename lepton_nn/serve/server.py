"""Running the app under uvicorn: one process, or ``workers`` processes sharing the port.

With several workers uvicorn starts each from an import string, so the configuration
travels in the environment (``LEPTON_SERVE_CONFIG``, JSON) to :func:`app_from_env`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from typing import Any

from . import _need_extra

__all__ = ["serve", "app_from_env", "uvicorn_options"]

ENV = "LEPTON_SERVE_CONFIG"


def app_from_env() -> Any:
    """The app of the configuration in ``LEPTON_SERVE_CONFIG`` (a worker process's)."""
    from .app import ServeConfig, create_app

    cfg = json.loads(os.environ[ENV])
    cfg["models"] = [tuple(m) for m in cfg["models"]]
    return create_app(ServeConfig(**cfg))


def uvicorn_options(host: str, port: int, log_level: str, graceful_seconds: float) -> dict:
    """uvicorn's settings for the service; ``http``: its HTTP protocol setting TCP_NODELAY
    on every connection (:mod:`.nodelay`: else answers wait ~40 ms on a socket asyncio
    leaves without it)."""
    from .nodelay import NoDelayHTTP

    return dict(
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=graceful_seconds,
        http=NoDelayHTTP,
    )


def serve(
    config: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: str = "info",
    sockets: list[socket.socket] | None = None,
    graceful_seconds: float = 30.0,
) -> None:
    """Serve until SIGINT/SIGTERM; then stop accepting, answer every request already in,
    and return (after at most ``graceful_seconds`` of draining)."""
    _need_extra()
    import uvicorn

    from .app import create_app

    common = uvicorn_options(host, port, log_level, graceful_seconds)
    if workers > 1:
        os.environ[ENV] = json.dumps(dataclasses.asdict(config))
        uvicorn.run("lepton_nn.serve.server:app_from_env", factory=True, workers=workers, **common)
        return
    app = create_app(config)
    service = app.state.service

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:  # /readyz says 503 from the signal on
            service.ready = False
            super().handle_exit(sig, frame)

    Server(uvicorn.Config(app, **common)).run(sockets=sockets)
