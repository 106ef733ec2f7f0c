"""Connections that never finish their request headers are closed after a timeout (ANOMALY_HEADER_TIMEOUT_S).

A client that opens a connection and sends its headers a byte at a time (or never) holds a connection and a
file descriptor for ever: uvicorn, which BentoML runs, times out only idle keep-alive connections, not a
request's headers, and neither lets a timeout be configured for them. Until it does, each worker arms a timer
on every new connection that closes it unless a request's headers have arrived by then. Slow bodies are the
request guard's (408).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol


def close_without_headers(protocol: Any) -> None:
    """Close a connection on which no request has begun (uvicorn creates `cycle` once the headers are complete)."""
    if protocol.cycle is None and not protocol.transport.is_closing():
        protocol.transport.close()


def _armed(connection_made: Callable[..., None], seconds: float) -> Callable[..., None]:
    def connection_made_with_header_deadline(self: Any, transport: asyncio.Transport) -> None:
        connection_made(self, transport)
        self.loop.call_later(seconds, close_without_headers, self)

    connection_made_with_header_deadline.header_deadline = True  # type: ignore[attr-defined]
    return connection_made_with_header_deadline


def enforce_header_timeout(seconds: float) -> None:
    """Arm the deadline on the HTTP/1.1 protocol uvicorn runs (httptools where installed, else h11), once per
    process."""
    if not getattr(AutoHTTPProtocol.connection_made, "header_deadline", False):
        AutoHTTPProtocol.connection_made = _armed(AutoHTTPProtocol.connection_made, seconds)  # type: ignore[method-assign]
