"""Request size limits, enforced before any parsing work."""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1_000_000
# A week of 5-minute intervals: far beyond any local day, small enough to validate quickly.
MAX_INTERVALS = 2016


def _too_large_message(limit: int) -> str:
    return f"request body too large: the limit is {limit} bytes"


class BodySizeLimit:
    """413 for a body over `max_bytes`: by Content-Length up front, else while it streams in
    (chunked uploads carry no Content-Length)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _send_413(send, self.max_bytes)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the endpoint's body read: the app's handler turns it into 413.
                    raise HTTPException(413, _too_large_message(self.max_bytes))
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send: Send, limit: int) -> None:
    message = _too_large_message(limit)
    body = json.dumps({"detail": message, "message": message}).encode()
    await send({
        "type": "http.response.start",
        "status": 413,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body})


def oversized_arrays(raw: dict[str, Any]) -> list[tuple[list[str], int]]:
    """(loc, length) of each request array longer than MAX_INTERVALS."""
    found = []
    tariff = raw.get("tariff")
    candidates = [(["load_kw"], raw.get("load_kw")), (["pv_kw"], raw.get("pv_kw"))]
    if isinstance(tariff, dict):
        candidates += [(["tariff", "buy"], tariff.get("buy")), (["tariff", "sell"], tariff.get("sell"))]
    for loc, values in candidates:
        if isinstance(values, list) and len(values) > MAX_INTERVALS:
            found.append((loc, len(values)))
    return found
