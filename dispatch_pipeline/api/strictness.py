"""What a request carries besides its body is checked as strictly as the body.

A mistyped query parameter (`dat=` for `date=`) would otherwise be dropped without a word and
the answer would look like the one asked for; a parameter given twice would be settled by
taking the last one, and a body sent with a GET (`{"date": ...}`) ignored. A POST body that is
not declared as JSON is refused before it is parsed: a browser form can send a text/plain body to
any origin without asking first.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from fastapi import Depends, Request

from dispatch_pipeline.api.auth import Grant, require_access
from dispatch_pipeline.api.errors import ApiError, echo, unprocessable

JSON_MEDIA_TYPE = "application/json"


def query_parameters(*allowed: str) -> Any:
    """A route dependency refusing query parameters other than `allowed`, or one given twice.

    It runs after the token check: an unauthenticated caller learns nothing from it.
    """

    async def check(request: Request, _: Annotated[Grant, Depends(require_access)]) -> None:
        counts = Counter(name for name, _value in request.query_params.multi_items())
        problems = []
        for name, count in counts.items():
            if name not in allowed:
                expected = f"this endpoint takes {', '.join(allowed)}" if allowed else "this endpoint takes none"
                problems.append(_query_problem(name, f"unknown query parameter ({expected})", "extra_forbidden"))
            elif count > 1:
                values = request.query_params.getlist(name)
                problems.append(_query_problem(
                    name, f"given {count} times ({', '.join(repr(echo(v)) for v in values)}); give it once",
                    "repeated_parameter",
                ))
        if request.method in ("GET", "HEAD") and await _has_body(request):
            problems.append({
                "loc": ["body"], "msg": "this endpoint takes no body: send its parameters in the query",
                "type": "body_forbidden",
            })
        if problems:
            raise unprocessable(problems)

    return Depends(check)


async def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if "transfer-encoding" not in request.headers and (length is None or length.strip() in ("", "0")):
        return False
    return bool(await request.body())  # a chunked GET may still carry nothing


def _query_problem(name: str, msg: str, kind: str) -> dict[str, Any]:
    return {"loc": ["query", name], "msg": msg, "type": kind}


def require_json_body(request: Request) -> None:
    """Refuse a body whose Content-Type is not application/json (charset UTF-8 if stated)."""
    sent = request.headers.getlist("content-type")
    if len(sent) > 1:
        # Which one a proxy or framework honours differs; a body's type must not be a guess.
        raise ApiError(415, f"Content-Type is sent {len(sent)} times ({', '.join(repr(echo(v)) for v in sent)}): send it once")
    content_type = sent[0] if sent else None
    media_type, _, parameters = (content_type or "").partition(";")
    charset = _charset(parameters)
    if media_type.strip().lower() != JSON_MEDIA_TYPE or charset not in (None, "utf-8"):
        got = "no Content-Type" if content_type is None else f"Content-Type {echo(content_type)!r}"
        raise ApiError(415, f"the body must be sent as Content-Type: {JSON_MEDIA_TYPE} in UTF-8 (got {got})")


def _charset(parameters: str) -> str | None:
    for parameter in parameters.split(";"):
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None
