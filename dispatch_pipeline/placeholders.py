"""The secrets of `.env.example`, refused where a secret is read: a deployment that kept one is
open to whoever has read the file."""

PLACEHOLDER_PREFIX = "change-me"
MAKE_SECRET = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def is_placeholder(secret: str) -> bool:
    return secret.strip().lower().startswith(PLACEHOLDER_PREFIX)
