"""HEAD wherever GET is answered, and 405 answers whose Allow header says so.

FastAPI's routes, unlike Starlette's, do not take HEAD where they take GET, yet load balancers
and uptime monitors probe with HEAD. HEAD is GET without the content (RFC 9110, 9.3.2): the GET
endpoint answers it here, and the content is dropped, so the status and the headers
(Retry-After, Content-Length) are the GET's and no endpoint needs a HEAD twin to keep in step.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _naming_head_where_get_is_allowed(send)
        if scope["method"] == "HEAD":
            # A copy: the layers outside this one (the server's error handling, its log) still
            # see the HEAD the client sent.
            await self.app({**scope, "method": "GET"}, receive, _without_content(send))
        else:
            await self.app(scope, receive, send)


def allowed_methods(allow: str) -> str:
    """An Allow header's value with HEAD added wherever GET is, in a stable order (Starlette
    joins a set's)."""
    methods = {method.strip().upper() for method in allow.split(",") if method.strip()}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def _naming_head_where_get_is_allowed(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 405:
            headers = MutableHeaders(scope=message)
            if "allow" in headers:
                headers["allow"] = allowed_methods(headers["allow"])
        await send(message)

    return sending


def _without_content(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return sending
