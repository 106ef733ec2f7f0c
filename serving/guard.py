"""An ASGI middleware that refuses requests before any route sees them: missing API key (401),
pickle or non-multipart uploads (415), bodies over the size limit (413).

It runs in front of BentoML's own body parsing, so a pickle body is never unpickled and a URL
string is never fetched, whatever a route's signature would have accepted.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics", "/docs.json", "/", "/docs"})
PICKLE_MEDIA_TYPES = frozenset({"application/vnd.bentoml+pickle", "application/python-pickle", "application/x-pickle"})
MULTIPART = "multipart/form-data"


async def send_json_error(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(key.encode(), value.encode()) for key, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    def __init__(self, app: ASGIApp, api_key: str | None, max_body_bytes: int, upload_paths: frozenset[str]) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.upload_paths = upload_paths

    def authorised(self, headers: dict[str, str]) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode())

    def refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, dict[str, str]] | None:
        """(status, message, headers) for a request refused from its headers alone, else None."""
        path = scope["path"]
        if self.api_key and path not in OPEN_PATHS and not self.authorised(headers):
            return 401, "missing or wrong API key: send 'Authorization: Bearer <key>'", {"www-authenticate": "Bearer"}
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type in PICKLE_MEDIA_TYPES:
            return 415, f"content type {media_type} is refused: pickled bodies are never accepted", {}
        if scope["method"] == "POST" and path in self.upload_paths and media_type != MULTIPART:
            return 415, (
                f"send images as {MULTIPART} file uploads, not {media_type or 'no content type'}; "
                "the server does not fetch URLs"
            ), {}
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return 400, f"invalid Content-Length header: {declared!r}", {}
            if int(declared) > self.max_body_bytes:
                return 413, self.too_large_message(int(declared)), {}
        return None

    def too_large_message(self, size: int | None) -> str:
        limit_mb = self.max_body_bytes / 1024 / 1024
        shown = "over" if size is None else f"{size / 1024 / 1024:.1f} MB,"
        return f"request body is {shown} the limit of {limit_mb:g} MB"

    async def read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit (chunked uploads have no length)."""
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        refused = self.refusal(scope, headers)
        if refused is not None:
            return await send_json_error(send, *refused)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        body = await self.read_body(receive)
        if body is None:
            return await send_json_error(send, 413, self.too_large_message(None))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
