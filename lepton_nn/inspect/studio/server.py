"""The studio's HTTP side, in its own process: a Starlette app run by uvicorn on a socket
bound to 127.0.0.1 only (the ``serve`` extra, as ``lepton-nn serve``). Its work (the
event stream's JSON and sockets, the page's files) never holds the training process's
interpreter lock; :mod:`.bridge` starts it and feeds it.

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

The process talks with the studio over two pipes. The studio writes messages of a kind byte,
a 4-byte little-endian length and a body: ``E`` an event, ``L`` one carrying layer
statistics (only the last ``keep`` of them keep those, as the studio's own list), both in
``marshal``'s binary form (cheap to write for the fit thread; read only from this pipe,
which only the studio writes: nothing from a file or a socket), ``R`` an answer (JSON
``{"id", "status", "body"}``) and ``X`` (closed). The process writes lines of text: ``P
port`` once listening, then ``Q {"id", "op", "arg"}`` (JSON) for each question the page asks
the studio (graph, node, state, control, backward, tensors, explain, features). Each event
is turned into JSON here, once, whatever the number of pages. An end of its input (the
studio closed or gone) stops the process. Run as ``python server.py KEEP PORT`` with the
pipes on its standard input and output (its prints go to standard error).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import marshal
import os
import socket
import struct
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

ASSETS = {
    "studio.js": "text/javascript",
    "charts.js": "text/javascript",
    "detail.js": "text/javascript",
    "graph.js": "text/javascript",
    "studio.css": "text/css",
}
ASK_TIMEOUT = 60.0  # seconds; the studio answers 503 itself after 30 s of a busy run


def _asset(name: str) -> str:
    return (Path(__file__).parent / "assets" / name).read_text("utf-8")


class Hub:
    """The process's state: the events (serialized JSON, append-only), the studio's open
    questions, and the event streams to wake; fed by :meth:`read` in its own thread."""

    def __init__(self, keep: int, out: Any) -> None:
        self.events: list[str] = []
        self.keep = keep
        self.full: deque[int] = deque()  # events still holding their layer statistics
        self.closed = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.wakes: set[asyncio.Event] = set()
        self.asks: dict[int, asyncio.Future] = {}
        self.ids = itertools.count()
        self.out = out
        self.out_lock = threading.Lock()
        self.server: Any = None

    def read(self, inp: Any) -> None:
        while True:
            head = inp.read(5)
            if len(head) < 5:
                break
            kind, size = head[:1], struct.unpack("<I", head[1:])[0]
            body = inp.read(size)
            if len(body) < size:
                break
            if kind in (b"E", b"L"):
                self._event(json.dumps(marshal.loads(body), default=_null), kind == b"L")
            elif kind == b"R":
                msg = json.loads(body)
                self._call(self._answer, msg)
            elif kind == b"X":
                self.closed = True
                self._call(self._wake)
        self.closed = True  # the studio closed the pipe (or ended): stop serving
        self._call(self._wake)
        if self.server is not None:
            self.server.should_exit = True

    def _call(self, fn: Any, *args: Any) -> None:
        if self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # the loop has closed
                pass

    def _event(self, text: str, layers: bool) -> None:
        self.events.append(text)  # (a list append: atomic for the streams reading it)
        if layers:
            self.full.append(len(self.events) - 1)
            if len(self.full) > self.keep:
                i = self.full.popleft()
                old = json.loads(self.events[i])
                old.pop("layers", None)
                self.events[i] = json.dumps(old)
        self._call(self._wake)

    def _wake(self) -> None:
        for w in list(self.wakes):
            w.set()

    def _answer(self, msg: dict) -> None:
        fut = self.asks.pop(msg.get("id"), None)
        if fut is not None and not fut.done():
            fut.set_result((int(msg.get("status", 500)), msg.get("body")))

    async def ask(self, op: str, arg: Any = None) -> tuple[int, Any]:
        """The studio's answer ``(status, body)`` to ``op`` (503 when none comes in time)."""
        if self.closed:
            return 503, {"error": "the studio has closed"}
        i = next(self.ids)
        fut = asyncio.get_running_loop().create_future()
        self.asks[i] = fut
        line = "Q " + json.dumps({"id": i, "op": op, "arg": arg}) + "\n"
        with self.out_lock:
            self.out.write(line.encode("utf-8"))
            self.out.flush()
        try:
            return await asyncio.wait_for(fut, ASK_TIMEOUT)
        except asyncio.TimeoutError:
            self.asks.pop(i, None)
            return 503, {"error": "the studio did not answer in time"}


def _null(value: Any) -> None:
    """JSON for what an event should not hold (the studio sends plain values): null."""
    return None


def _int_param(request: Any, name: str) -> int | None:
    try:
        return int(request.query_params.get(name, "0"))
    except ValueError:
        return None


def create_app(hub: Hub) -> Any:
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

    async def answer(op: str, arg: Any = None) -> Response:
        status, body = await hub.ask(op, arg)
        return JSONResponse(body, status)

    async def graph(request: Request) -> Response:
        return await answer("graph")

    async def node(request: Request) -> Response:
        return await answer("node", request.path_params["name"])

    async def state(request: Request) -> Response:
        return await answer("state")

    async def control(request: Request) -> Response:
        try:
            body = await request.json()
            action = str(body.get("action"))
        except (ValueError, AttributeError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return await answer("control", action)

    async def backward(request: Request) -> Response:
        return await answer("backward")

    async def tensors(request: Request) -> Response:
        return await answer("tensors", request.path_params["name"])

    async def by_row(request: Request, op: str) -> Response:
        row = _int_param(request, "row")
        if row is None:
            return JSONResponse({"error": "row must be an integer"}, 400)
        return await answer(op, row)

    async def explain(request: Request) -> Response:
        return await by_row(request, "explain")

    async def features(request: Request) -> Response:
        return await by_row(request, "features")

    async def events(request: Request) -> Response:
        try:
            pos = max(0, int(request.query_params.get("since", "0")))
        except ValueError:
            return JSONResponse({"error": "since must be an integer"}, 400)

        async def stream():
            # woken when an event arrives (no polling), else once a second
            nonlocal pos
            wake = asyncio.Event()
            hub.wakes.add(wake)
            try:
                yield ": studio\n\n"
                idle = 0
                while True:
                    wake.clear()
                    new = hub.events[pos:]  # append-only: a slice is a consistent snapshot
                    if new:
                        pos += len(new)
                        idle = 0
                        yield "".join(f"data: {e}\n\n" for e in new)
                        continue
                    if hub.closed:
                        return
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
                hub.wakes.discard(wake)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):  # the loop the studio's messages are handed to
        hub.loop = asyncio.get_running_loop()
        yield

    return Starlette(
        lifespan=lifespan,
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
            *_view_routes(hub),
        ],
    )


def _view_routes(hub: Hub) -> list[Any]:
    """The routes of the model views that came after the first page (:mod:`.ops_view`,
    :mod:`.saliency`), asked of the studio as the others: ``GET /api/ops/{name}``,
    ``GET /api/backward-ops``, ``GET /api/saliency?row=i&target=k``."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def answer(op: str, arg: Any = None) -> Response:
        status, body = await hub.ask(op, arg)
        return JSONResponse(body, status)

    async def ops(request: Request) -> Response:
        return await answer("ops", request.path_params["name"])

    async def backward_ops(request: Request) -> Response:
        return await answer("backward_ops")

    async def saliency_maps(request: Request) -> Response:
        row, target = _int_param(request, "row"), None
        if request.query_params.get("target", "") != "":
            target = _int_param(request, "target")
            if target is None:
                return JSONResponse({"error": "target must be an integer"}, 400)
        if row is None:
            return JSONResponse({"error": "row must be an integer"}, 400)
        return await answer("saliency", {"row": row, "target": target})

    return [
        Route("/api/ops/{name:path}", ops),
        Route("/api/backward-ops", backward_ops),
        Route("/api/saliency", saliency_maps),
    ]


def main(argv: list[str]) -> int:
    """The process: bind 127.0.0.1:``argv[1]``, say ``P port``, serve until the input ends."""
    import uvicorn

    keep, port = int(argv[0]), int(argv[1])
    inp, out = sys.stdin.buffer, os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr  # stray prints must not reach the studio's pipe
    hub = Hub(keep, out)
    # (proto named: asyncio sets TCP_NODELAY on accepted sockets of IPPROTO_TCP only; without
    # it a small answer waited ~40 ms for the client's delayed ACK)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        out.write(f"F {exc}\n".encode())
        out.flush()
        return 1
    config = uvicorn.Config(create_app(hub), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    hub.server = server

    def announce() -> None:  # once listening: the port, then the studio's messages
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.005)
        with hub.out_lock:
            out.write(f"P {sock.getsockname()[1]}\n".encode())
            out.flush()
        hub.read(inp)

    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])  # (uvicorn's own event loop: uvloop where installed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[-2:]))
