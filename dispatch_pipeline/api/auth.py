"""Bearer tokens from `DISPATCH_API_TOKENS`, optionally limited to some sites.

Format: comma-separated entries, each `TOKEN` (every site) or `TOKEN:SITE1|SITE2` (only those
sites), e.g. `DISPATCH_API_TOKENS="ops-7f3a,kl-9c2e:KL_MALL|KL_OFFICE"`. Unset or empty: no
authentication (the app logs a warning). /healthz never asks for a token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dispatch_pipeline.api.errors import ApiError
from dispatch_pipeline.core.request import SITE_ID_PATTERN
from dispatch_pipeline.placeholders import MAKE_SECRET, is_placeholder

TOKENS_ENV = "DISPATCH_API_TOKENS"
_SITE_ID = re.compile(SITE_ID_PATTERN)
_UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}
# The IANA registry's HTTP authentication schemes, lowercased.
_KNOWN_SCHEMES = frozenset({
    "basic", "concealed", "digest", "dpop", "gnap", "hoba", "mutual", "negotiate", "ntlm",
    "oauth", "privatetoken", "scram-sha-1", "scram-sha-256", "vapid", "aws4-hmac-sha256",
})
# RFC 6750's b64token widened to every visible ASCII character: clients encode anything beyond
# ASCII as they please (most as UTF-8, which the server reads as Latin-1, so it never matches),
# and a space is where clients and proxies split or fold a header.
_TOKEN = re.compile(r"[!-~]+")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grant:
    """What one token may do: `sites` None means every site."""

    digest: bytes
    sites: frozenset[str] | None

    def allows(self, site_id: str) -> bool:
        return self.sites is None or site_id in self.sites


# What a request may do when authentication is off.
OPEN_ACCESS = Grant(b"", None)


def _digest(token: str) -> bytes:
    # Comparing fixed-length digests keeps compare_digest's time independent of the token length.
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    def __init__(self, grants: list[Grant]):
        self.grants = grants

    @classmethod
    def parse(cls, text: str) -> TokenTable:
        """Read the `DISPATCH_API_TOKENS` format; ValueError names the bad entry."""
        grants = []
        first_seen: dict[bytes, int] = {}
        for position, entry in enumerate(text.split(","), start=1):
            entry = entry.strip()
            if not entry:
                continue
            token, has_sites, site_list = entry.partition(":")
            token = token.strip()
            if not token:
                raise ValueError(f"{TOKENS_ENV}: entry {position} has an empty token")
            if not _TOKEN.fullmatch(token):
                raise ValueError(
                    f"{TOKENS_ENV}: entry {position} has a token with a space or a character outside "
                    "visible ASCII: a bearer token is visible ASCII (RFC 6750), the only characters "
                    "every HTTP client sends as they are"
                )
            if is_placeholder(token):
                raise ValueError(
                    f"{TOKENS_ENV}: entry {position} is the placeholder of .env.example ({token!r}): anyone "
                    f"who has read it could call the API; {MAKE_SECRET}"
                )
            sites = None
            if has_sites:
                # An empty id ("KL_MALL|") is refused, not skipped: a site meant for it was lost.
                named = [s.strip() for s in site_list.split("|")]
                sites = frozenset(named)
                if not all(_SITE_ID.fullmatch(s) for s in named):
                    raise ValueError(
                        f"{TOKENS_ENV}: entry {position} needs site ids matching {SITE_ID_PATTERN} "
                        f"after ':' (got {site_list!r})"
                    )
            digest = _digest(token)
            if digest in first_seen:
                # Which entry would win is no way to grant access: one meant to narrow a token
                # could widen it to every site.
                raise ValueError(
                    f"{TOKENS_ENV}: entry {position} repeats the token of entry {first_seen[digest]}; "
                    "give each token one entry (TOKEN:SITE1|SITE2 for several sites)"
                )
            first_seen[digest] = position
            grants.append(Grant(digest, sites))
        return cls(grants)

    def find(self, token: str) -> Grant | None:
        """The grant of `token`; every entry is compared so timing does not reveal which matched."""
        presented = _digest(token)
        found = None
        for grant in self.grants:
            if hmac.compare_digest(grant.digest, presented):
                found = grant
        return found


def load_token_table(text: str | None) -> TokenTable | None:
    """None when authentication is off (variable unset or blank)."""
    if text is None or not text.strip():
        log.warning("%s is not set: the dispatch API accepts requests without a token", TOKENS_ENV)
        return None
    table = TokenTable.parse(text)
    if not table.grants:
        raise ValueError(f"{TOKENS_ENV}: no token in {text!r}")
    return table


bearer_scheme = HTTPBearer(
    auto_error=False,
    description=f"A token from `{TOKENS_ENV}` (only when the server sets it).",
)


async def require_access(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Grant:
    """FastAPI dependency: the caller's grant, or 401."""
    table: TokenTable | None = request.app.state.tokens
    if table is None:
        return OPEN_ACCESS
    sent = len(request.headers.getlist("authorization"))
    if sent > 1:
        # HTTPBearer reads the first; a proxy that checked the last would disagree on the caller.
        raise ApiError(401, f"Authorization is sent {sent} times: send one bearer token",
                       headers=_UNAUTHORIZED_HEADERS)
    if credentials is None:
        raise ApiError(401, f"{_why_not_bearer(request.headers.get('authorization', ''))}: "
                       "send 'Authorization: Bearer <token>'", headers=_UNAUTHORIZED_HEADERS)
    grant = table.find(credentials.credentials)
    if grant is None:
        raise ApiError(401, "unknown bearer token", headers=_UNAUTHORIZED_HEADERS)
    return grant


def _why_not_bearer(header: str) -> str:
    """Why an Authorization header holds no bearer token, naming its scheme only when it is a
    registered one: a header without a scheme, or with a tab after it, starts with the secret."""
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        return "missing bearer token"
    if scheme.lower() == "bearer":
        return "the bearer token is empty"
    if scheme.lower() in _KNOWN_SCHEMES:
        return f"Authorization of scheme {scheme!r}, not a bearer token"
    if scheme.lower().startswith("bearer") and scheme[len("bearer")].isspace():
        return "'Bearer' and the token must be separated by one space"
    if rest:
        return "Authorization of another scheme, not a bearer token"
    return "Authorization without a scheme (a token needs 'Bearer ' before it)"


def ensure_site_allowed(grant: Grant, site_id: str) -> None:
    if not grant.allows(site_id):
        raise ApiError(403, f"this token may not access site {site_id!r}")
