"""The studio's HTTP side: a Starlette app run by uvicorn in a background thread, bound to
127.0.0.1 only (the ``serve`` extra, as ``lepton-nn serve``).

Routes (JSON unless said):

- ``GET /``: the page; ``GET /static/{name}``: its scripts and style sheet (our own files
  in ``assets/``, no CDN);
- ``GET /api/graph``: layer calls, shapes and edges; ``GET /api/node/{name}``: forward
  formula, local derivative, op rules and the last batch's statistics of one layer call;
  ``GET /api/tensors/{name}``: its x, y, dL/dy, dL/dx, W, dL/dW and inner ops on sample rows;
- ``GET /api/state``; ``POST /api/control`` with ``{"action": "pause" | "step" | "resume"}``;
- ``GET /api/backward``: the backprop steps of one batch;
- ``GET /api/explain?row=i``: attributions of sample row i and global importances;
  ``GET /api/features?row=i``: the feature maps of sample image i;
- ``GET /api/ops/{name}``: the op nodes inside one layer call with their values and
  gradients on sample rows; ``GET /api/backward-ops``: the backprop steps through them;
  ``GET /api/saliency?row=i&target=k``: saliency maps of sample image i for output k;
- ``GET /api/events``: server-sent events, one ``data: {json}`` per published event, from
  ``?since=N`` (default 0: the whole run so far, so a late page still draws every point).

What runs the model waits for the fit thread's next batch boundary during a run: 503 when
none comes in time, 404 for an unknown layer or row, 400 for input it does not apply to.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from importlib import resources
from typing import Any

__all__ = ["StudioServer", "create_app"]


ASSETS = {
    "studio.js": "text/javascript",
    "charts.js": "text/javascript",
    "detail.js": "text/javascript",
    "graph.js": "text/javascript",
    "studio.css": "text/css",
}


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("assets", name).read_text("utf-8")


def _on_model(fn: Any) -> Any:
    """The answer of ``fn()`` (work on the model) or the error's status."""
    from starlette.responses import JSONResponse

    try:
        return JSONResponse(fn())
    except (KeyError, IndexError) as exc:
        return JSONResponse({"error": str(exc.args[0] if exc.args else exc)}, 404)
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, 400)
    except TimeoutError as exc:
        return JSONResponse({"error": str(exc)}, 503)


def _int_param(request: Any, name: str) -> int:
    try:
        return int(request.query_params.get(name, "0"))
    except ValueError:
        raise ValueError(f"{name} must be an integer") from None


def create_app(studio: Any) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    def page(request: Request) -> Response:
        return HTMLResponse(_asset("studio.html"))

    def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            return JSONResponse({"error": f"no file {name!r}"}, 404)
        return Response(_asset(name), media_type=ASSETS[name])

    def graph(request: Request) -> Response:
        return JSONResponse(studio.graph())

    def node(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            return JSONResponse(studio.node(name))
        except KeyError:
            return JSONResponse({"error": f"no layer call named {name!r}"}, 404)

    def state(request: Request) -> Response:
        return JSONResponse(studio.state())

    async def control(request: Request) -> Response:
        try:
            body = await request.json()
            return JSONResponse(studio.control(str(body.get("action"))))
        except (ValueError, AttributeError) as exc:
            return JSONResponse({"error": str(exc)}, 400)

    def backward(request: Request) -> Response:
        return _on_model(studio.backward)

    def tensors(request: Request) -> Response:
        name = request.path_params["name"]
        return _on_model(lambda: studio.tensors(name))

    def explain(request: Request) -> Response:
        return _on_model(lambda: studio.explain(_int_param(request, "row")))

    def features(request: Request) -> Response:
        return _on_model(lambda: studio.feature_maps(_int_param(request, "row")))

    async def events(request: Request) -> Response:
        try:
            pos = max(0, int(request.query_params.get("since", "0")))
        except ValueError:
            return JSONResponse({"error": "since must be an integer"}, 400)

        async def stream():
            # woken by the studio when it publishes (no polling: a sleeping server thread
            # takes no turn at the interpreter lock from the fit thread), else once a second
            nonlocal pos
            loop, wake = asyncio.get_running_loop(), asyncio.Event()

            def notify() -> None:  # on the publishing thread
                try:
                    loop.call_soon_threadsafe(wake.set)
                except RuntimeError:  # the loop has closed
                    pass

            studio.listeners.add(notify)
            try:
                yield ": studio\n\n"
                idle = 0
                while not studio.closed:
                    wake.clear()
                    new = studio.events[pos:]  # append-only: a slice is a consistent snapshot
                    if new:
                        pos += len(new)
                        idle = 0
                        yield "".join(f"data: {json.dumps(e)}\n\n" for e in new)
                        continue
                    try:
                        await asyncio.wait_for(wake.wait(), 1.0)
                        continue
                    except asyncio.TimeoutError:
                        idle += 1
                    if await request.is_disconnected():
                        return
                    if idle >= 15:  # a comment keeps proxies and the browser's timer quiet
                        idle = 0
                        yield ": keep-alive\n\n"
            finally:
                studio.listeners.discard(notify)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    return Starlette(
        routes=[
            Route("/", page),
            Route("/static/{name}", static),
            Route("/api/graph", graph),
            Route("/api/node/{name:path}", node),
            Route("/api/state", state),
            Route("/api/control", control, methods=["POST"]),
            Route("/api/backward", backward),
            Route("/api/tensors/{name:path}", tensors),
            Route("/api/explain", explain),
            Route("/api/features", features),
            Route("/api/events", events),
            *_view_routes(studio),
        ]
    )


def _view_routes(studio: Any) -> list[Any]:
    """The routes of the model views that came after the first page (:mod:`.ops_view`,
    :mod:`.saliency`): ``GET /api/ops/{name}``, ``GET /api/backward-ops``,
    ``GET /api/saliency?row=i&target=k``."""
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from . import ops_view, saliency

    def ops(request: Request) -> Response:
        name = request.path_params["name"]
        return _on_model(lambda: ops_view.for_studio(studio, name))

    def backward_ops(request: Request) -> Response:
        return _on_model(lambda: studio.backward(ops=True))

    def saliency_maps(request: Request) -> Response:
        row, target = _int_param(request, "row"), request.query_params.get("target")
        target = None if target in (None, "") else _int_param(request, "target")
        return _on_model(lambda: saliency.for_studio(studio, row, target))

    return [
        Route("/api/ops/{name:path}", ops),
        Route("/api/backward-ops", backward_ops),
        Route("/api/saliency", saliency_maps),
    ]


class StudioServer:
    """uvicorn serving :func:`create_app` on a socket bound to 127.0.0.1 (port 0: a free one),
    in a daemon thread; ``url``; ``stop()`` waits for it to end."""

    def __init__(self, studio: Any, port: int = 0) -> None:
        from ...serve import _need_extra

        _need_extra()
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", int(port)))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        config = uvicorn.Config(
            create_app(studio), log_level="warning", access_log=False, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # not the main thread's signals
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
        self.sock.close()
