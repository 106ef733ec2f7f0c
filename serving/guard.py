"""An ASGI middleware that refuses requests before any route sees them: missing API key (401),
pickle or non-multipart uploads (415), bodies over the size limit (413), bodies that stall (408).

It runs in front of BentoML's own body parsing, so a pickle body is never unpickled and a URL
string is never fetched, whatever a route's signature would have accepted. The body is not held
here: it streams through to the multipart parser (which spools files over 1 MB to disk), counted
on the way, so a burst of large uploads does not sit in the worker's memory twice.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# What answers without the key when ANOMALY_API_KEY is set: the page (it asks for the key) and the health probes.
# /metrics and the API description are a plant's production figures: Prometheus scrapes with the key as bearer token.
OPEN_PATHS = frozenset({"/livez", "/readyz", "/"})
PICKLE_MEDIA_TYPES = frozenset({"application/vnd.bentoml+pickle", "application/python-pickle", "application/x-pickle"})
MULTIPART = "multipart/form-data"


async def send_json_error(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(key.encode(), value.encode()) for key, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class BodyRefused(Exception):
    """The body passed the size limit or stalled: the guard answers, whatever the route was doing with it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RequestGuard:
    def __init__(
        self,
        app: ASGIApp,
        api_key: str | None,
        max_body_bytes: int,
        upload_paths: frozenset[str],
        read_timeout_s: float,
    ) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.upload_paths = upload_paths
        self.read_timeout_s = read_timeout_s

    def authorised(self, headers: dict[str, bytes]) -> bool:
        """A bearer token compared as bytes: the key in UTF-8 (what curl and HTTP libraries send), or in Latin-1 (what
        browsers send, and can only send) when it fits there. So a key may hold any characters. Without a key
        configured every request is."""
        if not self.api_key:
            return True
        scheme, _, token = headers.get("authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        encodings = [self.api_key.encode()]
        try:
            encodings.append(self.api_key.encode("latin-1"))
        except UnicodeEncodeError:
            pass
        return any(hmac.compare_digest(token.strip(), encoded) for encoded in encodings)

    def refusal(self, scope: Scope, headers: dict[str, bytes]) -> tuple[int, str, dict[str, str]] | None:
        """(status, message, headers) for a request refused from its headers alone, else None."""
        path = scope["path"]
        if path not in OPEN_PATHS and not self.authorised(headers):
            return 401, "missing or wrong API key: send 'Authorization: Bearer <key>'", {"www-authenticate": "Bearer"}
        media_type = headers.get("content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if media_type in PICKLE_MEDIA_TYPES:
            return 415, f"content type {media_type} is refused: pickled bodies are never accepted", {}
        if scope["method"] == "POST" and path in self.upload_paths and media_type != MULTIPART:
            return (
                415,
                (
                    f"send images as {MULTIPART} file uploads, not {media_type or 'no content type'}; the server does "
                    "not fetch URLs"
                ),
                {},
            )
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return 400, f"invalid Content-Length header: {declared.decode('latin-1')!r}", {}
            if int(declared) > self.max_body_bytes:
                return 413, self.too_large_message(int(declared)), {}
        return None

    def too_large_message(self, size: int | None) -> str:
        limit_mb = self.max_body_bytes / 1024 / 1024
        shown = "over" if size is None else f"{size / 1024 / 1024:.1f} MB,"
        return f"request body is {shown} the limit of {limit_mb:g} MB"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {key.decode("latin-1").lower(): value for key, value in scope["headers"]}
        refused = self.refusal(scope, headers)
        if refused is not None:
            return await send_json_error(send, *refused)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        received = 0
        complete = False
        stopped: BodyRefused | None = None
        answered = False

        async def counted_receive() -> Message:
            """The next body chunk, counted; past the limit or after read_timeout_s of silence the body is refused.
            Once the body is complete, messages (a disconnect) pass untouched."""
            nonlocal received, complete, stopped
            if stopped is not None:
                raise stopped
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout_s)
            except TimeoutError:
                stopped = BodyRefused(408, f"the request body stalled: nothing arrived for {self.read_timeout_s:g} s")
                raise stopped from None
            received += len(message.get("body", b""))
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            if received > self.max_body_bytes:
                stopped = BodyRefused(413, self.too_large_message(None))
                raise stopped
            return message

        async def guarded_send(message: Message) -> None:
            """The route's answer, unless the guard has refused the body (the route then answers an error of its
            own)."""
            nonlocal answered
            if stopped is None:
                answered = answered or message["type"] == "http.response.start"
                await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except BodyRefused:
            pass
        if stopped is not None and not answered:
            await send_json_error(send, stopped.status, str(stopped), {"connection": "close"})
