"""The training process's end of the studio's server (:mod:`.server`, its own process):
:class:`StudioServer` starts it, hands it each event as one line of JSON and answers the
page's questions.

Why a process: the event stream's work (JSON for every page, sockets, the asyncio loop)
run by a thread beside ``fit`` took the interpreter lock from the fit thread at every
event, and each hand-back waited on the scheduler: a page connected slowed a small
network's ``fit`` by more than half. Now the fit thread's part of an event is one
``marshal.dumps`` and one non-blocking ``os.write`` to a pipe (:meth:`StudioServer.send`);
when the pipe is full the rest waits in a backlog that a writer thread drains (it wakes only
then: :class:`Pipe`). A question from the page (``Q`` line) is answered in a short-lived thread by
:func:`answer`, which calls the studio as the in-process server did.
"""

from __future__ import annotations

import json
import marshal
import os
import select
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["Pipe", "StudioServer", "answer"]

# server.py run as a script, with nothing of the working directory on sys.path (only the
# standard library and the installed Starlette and uvicorn are imported there)
_LAUNCH = "import sys, runpy; del sys.path[0]; runpy.run_path(sys.argv[1], run_name='__main__')"


def answer(studio: Any, op: str, arg: Any) -> tuple[int, Any]:
    """``(HTTP status, JSON body)`` of the page's question ``op`` (a route of
    :mod:`.server`: graph, node, state, control, backward, tensors, explain, features,
    ops, backward_ops, saliency):
    404 for an unknown layer or row, 400 for input it does not apply to, 503 when a run
    reaches no batch boundary in time (work on the model waits for one)."""
    try:
        if op == "graph":
            return 200, studio.graph()
        if op == "state":
            return 200, studio.state()
        if op == "control":
            return 200, studio.control(str(arg))
        if op == "node":
            try:
                return 200, studio.node(str(arg))
            except KeyError:
                return 404, {"error": f"no layer call named {arg!r}"}
        if op == "backward":
            return 200, studio.backward()
        if op == "tensors":
            return 200, studio.tensors(str(arg))
        if op == "explain":
            return 200, studio.explain(int(arg))
        if op == "features":
            return 200, studio.feature_maps(int(arg))
        if op == "ops":
            from . import ops_view

            return 200, ops_view.for_studio(studio, str(arg))
        if op == "backward_ops":
            return 200, studio.backward(ops=True)
        if op == "saliency":
            from . import saliency

            return 200, saliency.for_studio(studio, int(arg["row"]), arg["target"])
        return 404, {"error": f"no such question {op!r}"}
    except (KeyError, IndexError) as exc:
        return 404, {"error": str(exc.args[0] if exc.args else exc)}
    except (ValueError, TypeError) as exc:
        return 400, {"error": str(exc)}
    except TimeoutError as exc:
        return 503, {"error": str(exc)}


class Pipe:
    """The writing end ``fd`` of a pipe, never blocking the caller: :meth:`send` writes
    what the pipe takes now and keeps the rest, in order, in a backlog that a writer thread
    (started the first time one is needed, asleep while the backlog is empty) writes as the
    reader makes room. After the reader has gone (a broken pipe) sends are dropped."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self.lock = threading.Condition()
        self.backlog = bytearray()  # what the pipe did not take yet, in order
        self.gone = False  # the reader has gone, or close() ran
        self.writer: threading.Thread | None = None

    def send(self, data: bytes) -> None:
        with self.lock:
            if self.gone:
                return
            if not self.backlog:
                try:
                    n = os.write(self.fd, data)
                except BlockingIOError:
                    n = 0
                except OSError:  # (BrokenPipeError) the reader has gone
                    self.gone = True
                    return
                data = data[n:]
            if data:
                self.backlog += data
                if self.writer is None:
                    self.writer = threading.Thread(target=self._drain, daemon=True)
                    self.writer.start()
                self.lock.notify_all()

    def _drain(self) -> None:
        while True:
            with self.lock:
                while not self.backlog and not self.gone:
                    self.lock.wait()
                if self.gone:
                    return
            select.select([], [self.fd], [], 0.5)
            with self.lock:
                try:
                    n = os.write(self.fd, self.backlog)
                except BlockingIOError:
                    n = 0
                except OSError:
                    self.gone = True
                    self.lock.notify_all()
                    return
                del self.backlog[:n]
                self.lock.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Waits (at most ``timeout`` s) until the pipe has taken every message."""
        end = time.monotonic() + timeout
        with self.lock:
            while self.backlog and not self.gone and time.monotonic() < end:
                self.lock.wait(0.05)
            return not self.backlog

    def close(self) -> None:
        """Drops what is left and lets the writer thread end (the fd is the caller's)."""
        with self.lock:
            self.gone = True
            self.lock.notify_all()


class StudioServer:
    """The server process for ``studio`` on 127.0.0.1:``port`` (0: a free one); ``url``;
    :meth:`send` an event; :meth:`stop` ends it."""

    def __init__(self, studio: Any, port: int = 0, keep: int = 500) -> None:
        from ...serve import _need_extra

        _need_extra()
        self.studio = studio
        script = str(Path(__file__).resolve().with_name("server.py"))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, script, str(int(keep)), str(int(port))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        first = self.proc.stdout.readline().decode("utf-8", "replace").strip()
        if not first.startswith("P "):
            self.proc.kill()
            self.proc.wait()
            raise OSError(f"the studio's server did not start: {first[2:] or 'no answer'}")
        self.port = int(first[2:])
        self.url = f"http://127.0.0.1:{self.port}/"
        self.pipe = Pipe(self.proc.stdin.fileno())
        self.reader = threading.Thread(target=self._questions, daemon=True, name="studio-ask")
        self.reader.start()

    # -- to the process ------------------------------------------------------------------------
    def send_event(self, event: dict) -> None:
        """One event (L when it carries layer statistics, else E), in ``marshal``'s binary
        form: ten times cheaper for the fit thread than JSON, which the server process
        writes. (The server only ever reads marshal data from this pipe, that only this
        process writes; what comes back is JSON.) Its values are Python's own types
        (dict, list, str, int, float, bool, None): a NumPy scalar would arrive as bytes,
        which the server writes as null."""
        self.send("L" if "layers" in event else "E", marshal.dumps(event))

    def send(self, kind: str, body: bytes) -> None:
        """One message (``kind`` E, L, R or X, then the body's length, 4 bytes little-endian,
        and the body), never blocking (:class:`Pipe`)."""
        self.pipe.send(kind.encode() + struct.pack("<I", len(body)) + body)

    # -- from the process ------------------------------------------------------------------------
    def _questions(self) -> None:
        for line in self.proc.stdout:
            if line[:2] != b"Q ":
                continue
            try:
                q = json.loads(line[2:])
                i, op, arg = int(q["id"]), str(q["op"]), q.get("arg")
            except (ValueError, KeyError, TypeError):
                continue
            threading.Thread(target=self._answer, args=(i, op, arg), daemon=True).start()

    def _answer(self, i: int, op: str, arg: Any) -> None:
        try:
            status, body = answer(self.studio, op, arg)
            text = json.dumps({"id": i, "status": status, "body": body})
        except Exception as exc:  # noqa: BLE001 - the page gets a 500, the run goes on
            text = json.dumps({"id": i, "status": 500, "body": {"error": repr(exc)}})
        self.send("R", text.encode())

    def stop(self) -> None:
        """Says closed, lets the process send what it has, then ends it."""
        self.send("X", b"")
        self.pipe.flush(2.0)
        self.pipe.close()
        try:
            self.proc.stdin.close()  # its input ends: it stops serving
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
