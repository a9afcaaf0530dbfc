"""The HTTP service: a Starlette app on the runtime, served by uvicorn (the ``serve`` extra).

Endpoints (JSON in and out)::

    POST /v1/models/{name}:predict   {"rows": [{column: value, ...} | [v1, v2, ...], ...]}
         -> {"model", "version", "predictions", "probabilities"?, "classes"?}  (tabular)
         with "reasons": K (and "adverse": class), tabular classifiers (binary with a
         training profile, multiclass) also answer "reasons": per row up to K [column,
         value, contribution] toward "adverse" (binary default: the positive class;
         multiclass default: each row's predicted class) (:mod:`lepton_nn.runtime.reasons`,
         as :func:`lepton_nn.risk.reason_codes`)
         -> {"model", "version", "outputs"}                                    (bare network)
         an object row may leave out a column the model imputes (read as null: missing)
    POST /v1/models/{name}:step      {"key": k, "x": [F values]} | {"keys": [...], "x": [[...]]}
         -> {"model", "version", "outputs": [[...], ...]}   (one row per key; recurrent nets)
    GET  /v1/models                  name, version, sha256, inputs, outputs of every model
    GET  /healthz                    200 while the process runs
    GET  /readyz                     200 once every model is loaded, 503 while shutting down
    GET  /metrics                    Prometheus text (see :mod:`.metrics`)

Status codes: 400 malformed JSON, 404 unknown model, 413 body over ``max_body_bytes``, 422
rows the model cannot read (the runtime's message: row and column named), 429 no room for a
new stream, 500 anything unexpected (logged; the server goes on). Requests are answered
in full during a graceful shutdown (uvicorn stops accepting, then drains); ``reload``
polls the files and swaps in a new version atomically (see :class:`.models.ServedModel`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from lepton_nn.errors import LeptonError
from lepton_nn.runtime.reasons import adverse_sign
from lepton_nn.runtime.stream import StreamLimitError

from .batcher import Batcher, Direct
from .metrics import Metrics
from .models import Ask, ServedModel, Version, run_batch, step_batch

__all__ = ["ServeConfig", "create_app"]

log = logging.getLogger("uvicorn.error").getChild("lepton_nn")  # printed as uvicorn's are


@dataclass
class ServeConfig:
    """What ``lepton-nn serve`` was asked for (its flags)."""

    models: list[tuple[str, str]]  # (name, path)
    max_batch_size: int = 64
    batch_window_ms: float = 2.0
    batching: bool = True
    max_body_bytes: int = 1 << 20
    reload: bool = False
    reload_interval: float = 1.0
    max_streams: int = 10_000
    idle_seconds: float | None = 600.0


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Service:
    """The models, their runners and the metrics behind the routes."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.models: dict[str, ServedModel] = {}
        self.runners: dict[str, Direct] = {}
        self.steppers: dict[str, Direct] = {}
        self.metrics = Metrics()
        self.ready = False
        self.watcher: asyncio.Task | None = None

    # -- life ----------------------------------------------------------------------------------
    async def start(self) -> None:
        c = self.config
        loop = asyncio.get_running_loop()
        # a plan per batch size up to max_batch_size stays cached: with the runtime's 8,
        # batches of every size rebuilt one per batch (~150 us for a small MLP)
        plans = max(8, c.max_batch_size + 1) if c.batching else 8
        for name, path in c.models:  # load on a thread: the loop stays free for /healthz
            m = await loop.run_in_executor(None, ServedModel, name, path, c.max_streams,
                                           c.idle_seconds, plans)  # fmt: skip
            self.models[name] = m
            on_batch = functools.partial(self.metrics.batch, name)
            self.runners[name] = self._runner(run_batch, on_batch)
            self.steppers[name] = self._runner(step_batch, lambda n: None)
        if c.reload:
            self.watcher = loop.create_task(self._watch())
        self.ready = True
        log.info("serving %s", ", ".join(f"{n} ({m.path})" for n, m in self.models.items()))

    async def stop(self) -> None:
        self.ready = False
        if self.watcher is not None:
            self.watcher.cancel()
        for r in (*self.runners.values(), *self.steppers.values()):
            await r.close()

    def _runner(self, work, on_batch) -> Direct:
        c = self.config
        if c.batching:
            return Batcher(work, c.max_batch_size, c.batch_window_ms / 1000.0, on_batch)
        return Direct(work, on_batch)

    async def _watch(self) -> None:
        """Every ``reload_interval`` s: a model file whose (inode, mtime, size) changed is
        loaded on a thread and, when it loads, becomes the version new requests use (one
        assignment)."""
        loop = asyncio.get_running_loop()
        tried: dict[str, tuple] = {}
        while True:
            await asyncio.sleep(self.config.reload_interval)
            for name, m in self.models.items():
                try:
                    stat = m.stat()
                except OSError:
                    continue  # between a delete and a rename: look again next time
                if stat == m.current.stat or stat == tried.get(name):
                    continue
                tried[name] = stat
                try:
                    v = await loop.run_in_executor(None, m.read, m.current)
                except (LeptonError, OSError, ValueError) as exc:
                    self.metrics.reload(name, False)
                    log.error(
                        "reload of %s (%s) failed, still serving the old version: %s",
                        name,
                        m.path,
                        exc,
                    )
                    continue
                if v.sha256 != m.current.sha256:
                    m.current = v
                    m.reloads += 1
                    self.metrics.reload(name, True)
                    log.info("reloaded %s: version %s", name, v.sha256[:12])
                else:
                    m.current.stat = v.stat

    # -- requests ------------------------------------------------------------------------------
    def model(self, name: str) -> ServedModel:
        m = self.models.get(name)
        if m is None:
            raise HTTPError(404, f"no model named {name!r}; GET /v1/models lists them")
        return m

    async def body(self, scope: dict, receive: Any) -> Any:
        """The request's JSON object, read from the ASGI ``receive`` up to the size limit."""
        limit = self.config.max_body_bytes
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                raise HTTPError(
                    413, f"request body of {int(value)} bytes is over the limit of {limit}"
                )
        chunks, n = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HTTPError(400, "the client went away mid-body")
            chunk = message.get("body", b"")
            n += len(chunk)
            if n > limit:
                raise HTTPError(413, f"request body is over the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        try:
            doc = json.loads(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPError(400, f"malformed JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise HTTPError(422, "the request body must be a JSON object")
        return doc

    async def predict(self, name: str, scope: dict, receive: Any) -> dict:
        m = self.model(name)
        runner = self.runners[name]
        runner.expect()  # a batch forming now may wait for these rows (see .batcher)
        try:
            doc = await self.body(scope, receive)
            rows = doc.get("rows")
            if not isinstance(rows, list) or not rows:
                raise HTTPError(422, "the request needs 'rows': a non-empty list of rows")
            version = m.current  # this request runs on this version, whatever reloads meanwhile
            ask = _ask(doc, rows, version, name)
        except BaseException:
            runner.arrived()
            raise
        answer = await runner.run(version, ask, len(rows))
        out = {"model": name, "version": version.sha256[:12], **answer}
        if version.model.classes is not None:
            out["classes"] = version.model.classes.tolist()
        return out

    async def step(self, name: str, scope: dict, receive: Any) -> dict:
        m = self.model(name)
        runner = self.steppers[name]
        runner.expect()
        try:
            keys, x = self._step_request(await self.body(scope, receive), m)
        except BaseException:
            runner.arrived()
            raise
        version = m.current
        if version.session is None:
            runner.arrived()
            raise HTTPError(422, f"model {name!r} cannot stream: {version.no_stream}")
        out = await runner.run(version, (keys, x), len(keys))
        return {"model": name, "version": version.sha256[:12], "outputs": out.tolist()}

    def _step_request(self, doc: dict, m: ServedModel) -> tuple[list, np.ndarray]:
        if "x" not in doc or ("key" in doc) == ("keys" in doc):
            raise HTTPError(422, "the request needs 'x' and one of 'key' or 'keys'")
        keys = [doc["key"]] if "key" in doc else doc["keys"]
        x = [doc["x"]] if "key" in doc else doc["x"]
        if not isinstance(keys, list) or not all(isinstance(k, (str, int)) for k in keys):
            raise HTTPError(422, "'keys' must be a list of strings or integers")
        try:
            xa = np.asarray(x, dtype=m.current.model.network.dtype)
        except (ValueError, TypeError) as exc:
            raise HTTPError(422, f"'x' must be numbers: {exc}") from None
        if xa.ndim != 2 or len(xa) != len(keys) or not keys:
            raise HTTPError(422, f"'x' must be one row per key, got shape {list(xa.shape)}")
        if len(set(keys)) != len(keys):
            raise HTTPError(422, "'keys': a stream appears twice in one request")
        return keys, xa


def _ask(doc: dict, rows: list, version: Version, name: str) -> Ask:
    """The request's rows and its optional ``"reasons": K`` and ``"adverse"`` (checked here,
    so that a bad one fails alone with 422 before any batching)."""
    if "reasons" not in doc:
        if "adverse" in doc:
            raise HTTPError(422, "'adverse' goes with 'reasons': K (the reasons per row)")
        return Ask(rows)
    if version.reasons is None:
        raise HTTPError(422, f"model {name!r} cannot give reasons: {version.no_reasons}")
    k, n_cols = doc["reasons"], len(version.reasons.names)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_cols:
        raise HTTPError(
            422, f"'reasons' must be an integer from 1 to {n_cols} (the columns), got {k!r:.40}"
        )
    adverse = doc.get("adverse")
    adverse_sign(version.model, adverse)  # DataError (422) naming the classes
    return Ask(rows, k, adverse)


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _json(doc: Any, status: int = 200) -> Response:
    return Response(_dumps(doc), status, media_type="application/json")


_HOT = {"predict", "step"}  # the endpoints answered by :class:`App` itself
_PREFIX = "/v1/models/"


class App:
    """The ASGI app: ``POST /v1/models/{name}:predict`` and ``:step`` are answered here as
    plain ASGI (a profile at 64 clients found Starlette's middleware, request and response
    objects a large share of each request's cost on the event loop, which is what limits
    batched throughput); every other path, and the lifespan, goes to the Starlette app."""

    def __init__(self, service: Service, starlette: Starlette) -> None:
        self.service, self.starlette, self.state = service, starlette, starlette.state
        self.metrics = service.metrics
        self.handlers = {"predict": service.predict, "step": service.step}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path.startswith(_PREFIX):
                name, _, verb = path[len(_PREFIX) :].rpartition(":")
                if verb in _HOT and name and "/" not in name:
                    await self.answer(scope, receive, send, name, verb)
                    return
        await self.starlette(scope, receive, send)

    async def answer(self, scope: dict, receive: Any, send: Any, name: str, verb: str) -> None:
        t0 = time.perf_counter()
        headers = [(b"content-type", b"application/json")]
        if scope["method"] != "POST":
            status, doc = 405, {"error": f"{verb} takes POST"}
            headers.append((b"allow", b"POST"))
        else:
            status, doc = await self.run(scope, receive, name, verb)
        try:
            body = _dumps(doc)
        except (TypeError, ValueError) as exc:  # an answer JSON cannot hold: logged, 500
            log.exception("%s %s: the answer is not JSON", verb, name)
            status, body = 500, _dumps({"error": f"internal error: {type(exc).__name__}"})
        headers.append((b"content-length", str(len(body)).encode()))
        if name in self.service.models:  # unknown names are not counted: no unbounded labels
            self.metrics.request(name, verb, status, time.perf_counter() - t0)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def run(self, scope: dict, receive: Any, name: str, verb: str) -> tuple[int, Any]:
        try:
            return 200, await self.handlers[verb](name, scope, receive)
        except HTTPError as exc:
            return exc.status, {"error": str(exc)}
        except StreamLimitError as exc:
            return 429, {"error": str(exc)}
        except LeptonError as exc:  # DataError, ShapeError: the rows, not the server
            return 422, {"error": str(exc)}
        except MemoryError:
            return 503, {"error": "out of memory: send fewer rows per request"}
        except Exception as exc:  # noqa: BLE001 - a request never takes the server down
            log.exception("%s %s failed", verb, name)
            return 500, {"error": f"internal error: {type(exc).__name__}: {exc}"}


def create_app(config: ServeConfig) -> App:
    """The ASGI app serving ``config.models`` (loaded at startup, in the lifespan)."""
    service = Service(config)
    metrics = service.metrics

    async def models(request: Request) -> Response:
        return _json({"models": [m.describe() for m in service.models.values()]})

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if service.ready:
            return _json({"status": "ready", "models": list(service.models)})
        return _json({"status": "not ready"}, 503)

    async def prometheus(request: Request) -> Response:
        streams = {
            n: len(m.current.session) for n, m in service.models.items() if m.current.session
        }
        return PlainTextResponse(metrics.render(streams), media_type="text/plain; version=0.0.4")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    routes = [
        Route("/v1/models", models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
    starlette = Starlette(routes=routes, lifespan=lifespan)
    starlette.state.service = service
    return App(service, starlette)
