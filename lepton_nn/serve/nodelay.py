"""TCP_NODELAY on every connection the service accepts.

A small answer written while the client's ACK of the previous segment is outstanding waits
for it (Nagle's algorithm), and the client delays that ACK up to ~40 ms: each request then
takes ~40 ms whatever the model's speed. asyncio sets TCP_NODELAY on accepted TCP sockets only
when the listening socket was made with ``IPPROTO_TCP`` (``socket.socket()`` says 0, as may
a socket handed to :func:`.server.serve`; so did the one uvicorn binds for several workers
until its issue 3149 was fixed, and macOS's ``getaddrinfo``); uvloop always sets it.
:class:`NoDelayHTTP`, uvicorn's own HTTP protocol (httptools where installed, else h11) with
the option set as each connection is made, covers every way the service gets its sockets.
Imported only when serving (uvicorn is the ``serve`` extra).
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

__all__ = ["NoDelayHTTP", "set_nodelay"]


def set_nodelay(transport: Any) -> None:
    """TCP_NODELAY on the TCP socket under ``transport`` (nothing for other sockets)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):  # (a connection already closed by the peer)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class NoDelayHTTP(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol, TCP_NODELAY set on each connection as it is made."""

    def connection_made(self, transport: Any) -> None:
        set_nodelay(transport)
        super().connection_made(transport)
