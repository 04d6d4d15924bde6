"""`Idempotency-Key` on POST /dispatch/run (the IETF draft "The Idempotency-Key HTTP Header
Field", as Stripe and others use it).

A client that timed out sends its request again with the key it sent first: the run the key
already names comes back, with `Idempotent-Replayed: true`, and nothing is solved or stored a
second time. A key is the caller's own (scoped to its bearer token) and stays with its run as
long as the run is stored: it does not expire. The same key with another request is a 422; a
request refused (422, 503, ...) stores no key, so the client may correct it and send it again
under the same key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import Request

from dispatch_pipeline.api.auth import Grant
from dispatch_pipeline.api.errors import (
    ApiError,
    echo,
    field_problem,
    unprocessable,
    with_problem_first,
)
from dispatch_pipeline.storage import IdempotencyKey, KeyedRun
from dispatch_pipeline.storage.tables import IDEMPOTENCY_KEY_LENGTH

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
LOC = ["header", HEADER]
# Printable ASCII, space included; not at either end, where HTTP does not keep it (RFC 9110 5.5).
KEY_PATTERN = r"^[!-~]([ -~]*[!-~])?$"
# Leading and trailing whitespace is not part of a field value: a server strips it, the test
# client may not.
_OWS = " \t"
_SCOPE_CONTEXT = b"dispatch-pipeline idempotency scope\x00"


def read_key(request: Request) -> str | None:
    """The request's `Idempotency-Key`, or None without one; a 422 naming the header and the value
    when it is no key."""
    sent = request.headers.getlist(HEADER)
    if not sent:
        return None
    if len(sent) > 1:
        # Which of them a proxy would keep is a guess, and the key must not be one.
        raise _refused(f"sent {len(sent)} times ({', '.join(repr(echo(v)) for v in sent)}); send one key",
                       kind="repeated_header")
    key = sent[0].strip(_OWS)
    if not key:
        raise _refused(f"is empty: a key is 1 to {IDEMPOTENCY_KEY_LENGTH} printable ASCII characters", key)
    if len(key) > IDEMPOTENCY_KEY_LENGTH:
        raise _refused(f"has {len(key)} characters; a key has at most {IDEMPOTENCY_KEY_LENGTH}", key)
    if any(not " " <= c <= "~" for c in key):
        sent = _as_sent(key)
        position, character = next((i, c) for i, c in enumerate(sent, start=1) if not " " <= c <= "~")
        raise _refused(
            f"character {position} ({character!r}) is not printable ASCII: a key is 1 to "
            f"{IDEMPOTENCY_KEY_LENGTH} printable ASCII characters",
            sent,
        )
    return key


def _as_sent(value: str) -> str:
    """The header value as its client most likely wrote it: Starlette reads header bytes as
    Latin-1, where UTF-8's "é" is two characters ("Ã©")."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def _refused(message: str, value: str | None = None, kind: str = "value_error") -> ApiError:
    return unprocessable([_problem(message, value, kind)])


def _problem(message: str, value: str | None, kind: str) -> dict[str, Any]:
    problem = field_problem([], message, value, kind)
    problem["loc"] = LOC
    return problem


def scope(grant: Grant) -> str:
    """Whose keys a request's are: a digest of its bearer token (not the token's own digest, which
    authenticates it), empty when the API asks for no token. Two callers' keys never meet, and
    neither replays the other's runs."""
    if not grant.digest:
        return ""
    return hashlib.sha256(_SCOPE_CONTEXT + grant.digest).hexdigest()


def fingerprint(raw: dict[str, Any]) -> str:
    """SHA-256 of the body as canonical JSON (keys sorted, no spaces, ASCII): the same request
    however its client spaced or ordered it."""
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True,
                           default=_unreadable)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _unreadable(value: Any) -> Any:
    # A number parse_json kept as written (too large, or rounding to 0): never stored, but the
    # fingerprint is taken before the body is validated.
    return {type(value).__name__: str(value)}


def request_key(key: str, grant: Grant, raw: dict[str, Any]) -> IdempotencyKey:
    return IdempotencyKey(scope=scope(grant), key=key, fingerprint=fingerprint(raw))


def reused(key: IdempotencyKey, stored: KeyedRun, body_error: ApiError | None = None) -> ApiError:
    """The 422 of a key sent again with another request than the one it stored a run for; naming
    too what `body_error` (a 422 of the request) names, so that one answer says all."""
    problem = _problem(
        f"this key was sent before with another request, which stored run {stored.run_id}: send that "
        "request again to get its answer, or this one under a new key",
        key.key,
        "idempotency_key_reused",
    )
    return unprocessable([problem]) if body_error is None else with_problem_first(body_error, problem)


def openapi_parameters() -> dict[str, Any]:
    """The header as POST /dispatch/run's description lists it (the route reads it by hand)."""
    return {
        "parameters": [{
            "name": HEADER,
            "in": "header",
            "required": False,
            "description": (
                f"Optional; 1 to {IDEMPOTENCY_KEY_LENGTH} printable ASCII characters the client "
                "chooses, one per request (a UUID, say). A request sent again with its key is not "
                "planned again: the answer is the run the key stored, with "
                f"`{REPLAYED_HEADER}: true`. The key is the caller's (its token's) and lasts as "
                "long as its run; the same key with a different body is a 422. A refused request "
                "stores no key."
            ),
            "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_LENGTH,
                       "pattern": KEY_PATTERN},
            # No example: schema-driven clients (the fuzz tests) would send that one key with
            # every body, and all but the first would be refused as the key sent again.
        }]
    }


REPLAYED_RESPONSE_HEADER = {
    REPLAYED_HEADER: {
        "description": "`true` when the answer is the run an earlier request with the same "
                       f"`{HEADER}` stored; absent otherwise.",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
