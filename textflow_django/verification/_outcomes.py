"""What operators see of every send and check: one event per call of :func:`send_code`,
:func:`check_code` and :func:`confirm`, whoever made it (the views, the forms, the
integrations, a project's own code).

- ``textflow.send_code.sent number=+1********43 country=US mode=local``
- ``textflow.send_code.refused reason=<the refusal's code> number=...`` (``retry_after``
  when known; for a TextFlow failure the error's class, HTTP status and ``maybe_sent``)
- ``textflow.verify_code.verified number=... country=US via=check`` (``via=confirm`` for a
  code its maker checked)
- ``textflow.verify_code.failed reason=<the refusal's code> number=...`` (``attempts_left``
  after a wrong code)

The reason is the refusal's machine code, as the API answers it (``resend_too_soon``,
``destination_blocked``, ``country_not_allowed``, ``sms_provider_error``...), or
``invalid_phone_number`` for a number the parser refused. A cap's refusal
(``reason=rate_limited``) is reported by ``_service.report_refusal``, which alone knows the
capped scopes; the decorators leave it to it. Numbers are masked; the code is never read.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from .. import phone
from .._events import emit
from ..exceptions import InvalidCode, RateLimited, TextFlowError, VerificationError

__all__ = ["reported_check", "reported_confirm", "reported_send"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def reported_send(send: Callable[_P, _R]) -> Callable[_P, _R]:
    """Report each call of ``send_code(phone_number, ...)``: sent, or refused and why."""
    return _reported(send, "send_code")


def reported_check(check: Callable[_P, _R]) -> Callable[_P, _R]:
    """Report each call of ``check_code(phone_number, code, ...)``: verified, or failed and
    why."""
    return _reported(check, "check")


def reported_confirm(confirm: Callable[_P, _R]) -> Callable[_P, _R]:
    """Report each call of ``confirm(phone_number, ...)`` that verified a code or raised
    (one that found nothing to confirm changes nothing, and says nothing)."""
    return _reported(confirm, "confirm")


def _reported(call: Callable[_P, _R], via: str) -> Callable[_P, _R]:
    """``call`` reporting its outcome; ``via`` is ``"send_code"``, ``"check"`` or
    ``"confirm"``. Event names stay literal here, for grep and for the test that checks
    every name is listed."""
    sends = via == "send_code"

    @functools.wraps(call)
    def report(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            result = call(*args, **kwargs)
        except RateLimited:
            raise  # report_refusal said it, with the capped scopes
        except (VerificationError, phone.InvalidPhoneNumberError) as err:
            number = args[0] if args else kwargs.get("phone_number")
            fields = _refusal(err, number)
            if sends:
                emit("textflow.send_code.refused", **fields)
            else:
                emit("textflow.verify_code.failed", **fields)
            raise
        if result is None:
            return result
        verification = getattr(result, "verification", None)
        number = phone.mask(getattr(result, "phone_number", None))
        country = getattr(verification, "country", "")
        if sends:
            mode = getattr(verification, "mode", "")
            emit("textflow.send_code.sent", number=number, country=country, mode=mode)
        else:
            emit("textflow.verify_code.verified", number=number, country=country, via=via)
        return result

    return report


def _refusal(err: Exception, number: object) -> dict[str, object]:
    """The fields of a refusal's event: why, whose number (masked), and what helps."""
    fields: dict[str, object]
    if isinstance(err, phone.InvalidPhoneNumberError):
        fields = {"reason": "invalid_phone_number", "number": phone.mask(number)}
        fields["detail"] = err.code
    else:
        assert isinstance(err, VerificationError)
        fields = {"reason": err.code, "number": phone.mask(number)}
        if isinstance(err, InvalidCode):
            fields["attempts_left"] = err.attempts_left
        if err.retry_after is not None:
            fields["retry_after"] = err.retry_after
    cause = err.__cause__  # TextFlow's failure, which the service's refusal was raised from
    if isinstance(cause, TextFlowError):
        fields.update(error=type(cause).__name__, status=cause.status, maybe_sent=cause.maybe_sent)
    return fields
