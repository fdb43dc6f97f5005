"""How the verification service fails: a TextFlow failure becomes the service's refusal, and a
failing rate-limit store fails closed. Both log what happened, never a key or a code."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from .. import phone
from ..exceptions import (
    LimitsUnavailable,
    SMSProviderError,
    SMSProviderUnavailable,
    TextFlowBadResponse,
    TextFlowError,
    TextFlowRejectedNumber,
    TextFlowServerError,
    TextFlowUnavailable,
)

__all__ = ["provider_error", "store_calls"]

logger = logging.getLogger("textflow_django")


def provider_error(err: TextFlowError, number: str, action: str) -> Exception:
    """Map a TextFlow failure to the service's refusal, logging it (never key or code)."""
    logger.warning(
        "TextFlow %s for %s failed: %s (%s, maybe_sent=%s)",
        action,
        phone.mask(number),
        err,
        type(err).__name__,
        err.maybe_sent,
    )
    if isinstance(err, TextFlowRejectedNumber):
        return phone.InvalidPhoneNumberError()
    if isinstance(err, TextFlowServerError | TextFlowBadResponse):
        return SMSProviderError()
    if isinstance(err, TextFlowUnavailable):
        return SMSProviderUnavailable(retry_after=getattr(err, "retry_after", None) or 5)
    retry_after = getattr(err, "retry_after", None)
    if err.status == 429:
        return SMSProviderUnavailable(retry_after=retry_after or 5)
    return SMSProviderError()


@contextlib.contextmanager
def store_calls(settled: bool = False) -> Iterator[None]:
    """Calls to the rate-limit store: a store that fails (Redis or the database down) fails
    closed, as ``LimitsUnavailable`` (503), rather than as a 500 or as no limit at all.

    ``settled``: the outcome is already decided and the call only books it (a refund after
    a failed send, a wrong code's count); its failure is logged and the outcome stands."""
    try:
        yield
    except Exception as err:
        # No traceback: a store error's message names its server or a key (a key holds a
        # phone number: personal data, not a secret), and never a code or the API key.
        logger.error("textflow: the rate-limit store failed: %s: %s", type(err).__name__, err)
        if not settled:
            raise LimitsUnavailable() from err
