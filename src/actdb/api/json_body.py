"""Accept a JSON body whatever content type the client declared.

``curl -d '{"query": ...}'`` sends ``Content-Type: application/x-www-form-urlencoded``, and
FastAPI then parses the body as a form, so the README's examples used to fail with
"Input should be a valid dictionary". This ASGI middleware reads the body of each
``POST /v1/...`` request whose declared type is not JSON; when the body parses as JSON,
the request goes on as ``application/json``; otherwise it goes on unchanged (and fails
validation as before). Bodies over :data:`MAX_SNIFF` bytes are passed on untouched.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_SNIFF = 4 * 2**20
JSON = b"application/json"


class JsonBody:
    """ASGI middleware: POST bodies under ``prefix`` that parse as JSON are JSON."""

    def __init__(self, app: ASGIApp, prefix: str = "/v1/"):
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not str(scope.get("path", "")).startswith(
                self.prefix):
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers") or [])
        declared = next((v for k, v in headers if k.lower() == b"content-type"), b"")
        if declared.split(b";")[0].strip().lower() == JSON:
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        size, more = 0, True
        while more and size <= MAX_SNIFF:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            more = bool(message.get("more_body", False))
        complete = not more and messages and messages[-1]["type"] == "http.request"
        if complete:
            body = b"".join(m.get("body", b"") for m in messages)
            messages = [{"type": "http.request", "body": body, "more_body": False}]
            if _is_json(body):
                scope = dict(scope)
                scope["headers"] = [(k, v) for k, v in headers if k.lower() != b"content-type"] + [
                    (b"content-type", JSON)]
        pending = list(messages)

        async def replay() -> Message:
            if pending:
                return pending.pop(0)
            return await receive()

        await self.app(scope, replay, send)


def _is_json(body: bytes) -> bool:
    if not body.strip():
        return False
    try:
        json.loads(body)
    except ValueError:  # includes UnicodeDecodeError
        return False
    return True
