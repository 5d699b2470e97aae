"""Request body limits, enforced on the bytes actually received (a lying Content-Length does not help)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, default_limit: int, upload_limit: int, upload_paths: tuple[str, ...]) -> None:
        """``upload_paths``: exact paths, or patterns ending in ``/*/upload`` (one path segment in between)."""
        self.app = app
        self.default_limit = default_limit
        self.upload_limit = upload_limit
        self.upload_paths = upload_paths

    def is_upload(self, path: str) -> bool:
        for pattern in self.upload_paths:
            if pattern == path:
                return True
            prefix, _star, suffix = pattern.partition("/*")
            if _star and path.startswith(prefix + "/") and path.endswith(suffix):
                middle = path[len(prefix) + 1 : len(path) - len(suffix)]
                if middle and "/" not in middle:
                    return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self.upload_limit if self.is_upload(path) else self.default_limit
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        received = 0
        exceeded = False
        started = False

        async def limited() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # The app sees the client go away (its form parser stops and closes its temporary
                    # files); the 413 is sent from here. Raising instead would surface inside the
                    # http middleware's task group as an exception group, a 500.
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # whatever the app answers to the cut-off body, the client gets the 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await _too_large(send, limit)


def _message(limit: int) -> str:
    return f"The request body is larger than the limit of {limit:,} bytes; upload a smaller file."


async def _too_large(send: Send, limit: int) -> None:
    import json

    body = json.dumps({"error": {"code": "too_large", "message": _message(limit), "field": None}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
