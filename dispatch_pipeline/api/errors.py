"""One error shape for every failure: `{"detail": ..., "message": "..."}`.

422 answers carry `detail` as a list of `{loc, msg, type, input}` (FastAPI's own shape) so clients
can point at the field; `message` repeats it as one readable line naming field and value.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import ArgumentError, InterfaceError, NoSuchModuleError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from dispatch_pipeline.core.request import RequestError

# The database down or unreachable, or the server's own DATABASE_URL unusable (malformed, its
# driver missing): none of them the client's fault, all answered 503 with Retry-After.
DATABASE_FAILURES: tuple[type[Exception], ...] = (
    OperationalError, InterfaceError, PoolTimeoutError, ArgumentError, NoSuchModuleError,
)

# An input echoed back longer than this (as JSON) is abbreviated: a 96-value array or a whole
# request body helps nobody in an error message.
MAX_ECHOED_CHARS = 120
MAX_LISTED_PROBLEMS = 50  # per 422 answer; the rest are counted
_FIELD_PREFIX = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:(?:\.[A-Za-z_][A-Za-z0-9_]*)|\[\d+\])*): ")
_PATH_PART = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


class EscapedJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped.

    An error echoes what the client sent, and JSON text may carry a lone surrogate ("\\ud800")
    that no UTF-8 body can hold; escaped, it goes back exactly as it came.
    """

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


class ApiError(Exception):
    """An answer other than 2xx; `problems` are 422 detail entries when there are several."""

    def __init__(self, status_code: int, message: str, problems: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.problems = problems
        self.headers = headers
        self.unlisted = 0  # problems of a 422 left out of `problems`


def unprocessable(problems: list[dict[str, Any]], unlisted: int = 0) -> ApiError:
    """A 422 listing `problems`, up to MAX_LISTED_PROBLEMS of them; `unlisted` more are only counted."""
    if len(problems) > MAX_LISTED_PROBLEMS:
        # A 1 MB body of 75,000 bad keys would otherwise answer with 12 MB.
        unlisted += len(problems) - MAX_LISTED_PROBLEMS
        problems = problems[:MAX_LISTED_PROBLEMS]
    if unlisted:
        problems = [
            *problems,
            {"loc": ["body"], "msg": f"and {unlisted} more problems, not listed", "type": "too_many_problems"},
        ]
    error = ApiError(422, "; ".join(_sentence(p) for p in problems), problems)
    error.unlisted = unlisted
    return error


def with_problem_first(error: ApiError, problem: dict[str, Any]) -> ApiError:
    """The 422 `error` with `problem` named before its own."""
    listed = [p for p in error.problems or [] if p["type"] != "too_many_problems"]
    return unprocessable([problem, *listed], error.unlisted)


def field_problem(loc: list[str | int], msg: str, value: Any = None, kind: str = "value_error") -> dict:
    entry: dict[str, Any] = {"loc": ["body", *loc], "msg": msg, "type": kind}
    if value is not None:
        entry["input"] = echo(value)
    return entry


def validation_problems(exc: ValidationError | RequestValidationError, prefix: tuple = ("body",)) -> list[dict]:
    return error_problems(exc.errors(), prefix)


def error_problems(errors: Iterable[Any], prefix: tuple = ("body",)) -> list[dict]:
    """422 detail entries of pydantic's errors (each as ValidationError.errors() gives it)."""
    problems = []
    for error in errors:
        entry: dict[str, Any] = {
            "loc": [*prefix, *error["loc"]],
            "msg": error["msg"].removeprefix("Value error, "),
            "type": error["type"],
        }
        # A "missing" error's input is the whole enclosing object: noise, not evidence.
        if error["type"] != "missing" and "input" in error:
            entry["input"] = echo(error["input"])
        problems.append(entry)
    return problems


def from_request_error(exc: RequestError) -> ApiError:
    return unprocessable(request_problems(exc))


def request_problems(exc: RequestError) -> list[dict]:
    """Core's messages start with the field ("load_kw: has 95 values, ..."); recover the loc."""
    problems = []
    for text in exc.problems:
        match = _FIELD_PREFIX.match(text)
        if match:
            loc = [int(i) if i else name for name, i in _PATH_PART.findall(match.group(1))]
            problems.append({"loc": ["body", *loc], "msg": text[match.end():], "type": "value_error"})
        else:
            problems.append({"loc": ["body"], "msg": text, "type": "value_error"})
    return problems


def echo(value: Any) -> Any:
    """`value` made safe for a JSON answer: no NaN/inf (invalid JSON), nothing huge."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, int):
        # bit_length first: str() of a huge int is slow (and refused past 4300 digits).
        return value if value.bit_length() <= 128 else f"an integer of {value.bit_length()} bits"
    if isinstance(value, (dict, list)):
        text = json.dumps(value, default=str)
        if len(text) <= MAX_ECHOED_CHARS and "NaN" not in text and "Infinity" not in text:
            return value
        return _abbreviate(text)
    return _abbreviate(str(value))


def _abbreviate(text: str) -> str:
    return text if len(text) <= MAX_ECHOED_CHARS else text[: MAX_ECHOED_CHARS - 3] + "..."


def _sentence(problem: dict[str, Any]) -> str:
    location = ""
    for part in problem["loc"][1:] if problem["loc"][:1] in (["body"], ["query"], ["path"], ["header"]) else problem["loc"]:
        location += f"[{part}]" if isinstance(part, int) else (f".{part}" if location else str(part))
    text = f"{location or 'request'}: {problem['msg']}"
    # A validator that words its value itself ("not a number (got 20240315)") has said it
    # already, as core.request.describe_error has it.
    if "input" in problem and "(got " not in problem["msg"]:
        text += f" (got {json.dumps(problem['input'], default=str)})"
    return text


def error_response(status_code: int, message: str, detail: Any = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return EscapedJSONResponse(
        {"detail": message if detail is None else detail, "message": message},
        status_code=status_code,
        headers=headers,
    )


async def handle_api_error(_request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status_code, exc.message, exc.problems, exc.headers)


async def handle_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    error = unprocessable(validation_problems(exc, prefix=()))
    return error_response(422, error.message, error.problems)


async def handle_http_exception(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)
