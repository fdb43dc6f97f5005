"""Opaque secrets handed to a client (a verification's handle, a token) and the one way they
are kept: as SHA-256 digests. They are 192 random bits each, so a digest needs no salt or key
to resist guessing, and a leaked table reveals none of them."""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from django.http import HttpRequest

__all__ = ["MAX_SECRET_LENGTH", "digest", "new_secret", "session_digest"]

#: Bytes of randomness in one secret (32 URL-safe characters).
SECRET_BYTES: Final = 24
#: Longer input is refused before it is hashed (a cheap guard on hostile input).
MAX_SECRET_LENGTH: Final = 200


def new_secret() -> tuple[str, str]:
    """A fresh secret for the client and the digest to store: ``(secret, digest)``."""
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return secret, digest(secret)


def digest(secret: str) -> str:
    """The stored form of a secret (64 hex digits)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def session_digest(request: HttpRequest | None) -> str:
    """The digest of the request's session key, or ``""`` without a saved session."""
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None)
    return digest(key) if key else ""
