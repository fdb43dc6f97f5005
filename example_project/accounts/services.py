"""Account creation from a verification token, shared by the HTML signup and the API."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.http import HttpRequest
from textflow_django.exceptions import InvalidToken
from textflow_django.verification import consume_token

from .models import Profile, VerifiedNumber


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_account(
    *, token: str, create_user: Callable[[], Any], request: HttpRequest | None = None
) -> Any:
    """Create a user (with ``create_user()``) and their profile with the verified number.

    The token is spent (``consume_token``: genuine, young, never used before) in the same
    transaction that creates the account, and must be the one the ``phone_verified``
    receiver recorded, not yet claimed. A refused token creates nothing and, the
    transaction rolled back, is not spent either. ``request`` is the request presenting
    the token: with ``TOKEN_SESSION_BINDING`` on, only the session that verified may spend it.

    Raises:
        InvalidToken: forged, expired, never verified, already used, or (with session
        binding) presented from another session.
    """
    with transaction.atomic():
        number = consume_token(token, request=request)
        proof = (
            VerifiedNumber.objects.select_for_update()
            .filter(token_digest=token_digest(token), claimed_by__isnull=True)
            .first()
        )
        if proof is None or proof.phone != number:
            raise InvalidToken()
        user = create_user()
        Profile.objects.create(user=user, phone=number, phone_verified=True)
        proof.claimed_by = user
        proof.save(update_fields=["claimed_by"])
    return user
