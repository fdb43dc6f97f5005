"""How the verification service fails: a TextFlow failure becomes the service's refusal, and a
failing rate-limit store fails closed (``textflow.store.failed``). What a TextFlow failure
was is reported with the refusal (``_outcomes``) and by the client
(``textflow.api.failed``); never a key or a code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .. import phone
from .._events import emit
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


def provider_error(err: TextFlowError) -> Exception:
    """Map a TextFlow failure to the service's refusal (raised ``from err``: the refusal's
    event names ``err``'s class, status and ``maybe_sent``)."""
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
        # phone number: masked), and never a code or the API key.
        detail = phone.mask_numbers(str(err))
        emit("textflow.store.failed", error=type(err).__name__, detail=detail, settled=settled)
        if not settled:
            raise LimitsUnavailable() from err
