"""How a refused SMS reaches the user on allauth's pages, rather than as a server error.

allauth sends its SMS from its views once their form is valid, and has no way for a send
to fail. The adapter catches the refusal (a cap, the cooldown, the Fraud Guard, TextFlow
down) and hands it here, which answers in one of two ways:

- **The form again, with the refusal as its error**, when the number was typed into the
  form of this very request and the view only sends after its form (allauth's
  ``RequestLoginCodeView``, ``LoginView`` -- login by code -- and ``ChangePhoneView``, or a
  subclass): the view is run again on the same POST, and the phone field's cleaning
  (``adapter.clean_phone``) now raises the refusal, so allauth's own view renders its own
  form with the message under the field. Nothing else happened before the send (allauth
  saves its state after it), so nothing is left half done.
- **allauth's next page, with the refusal as an error message**, everywhere else: a
  resend, the verification step of a signup or of a login with an unverified number (an
  account was already created or logged in), a change of number on the code page. allauth
  goes on as if the SMS had gone (its "code sent" message is left out), and its code page
  shows the refusal where the user can ask again later or change the number; this is how
  allauth itself reports its own rate limit on a resend.

A send that failed after it may have reached TextFlow (``extra["code_may_arrive"]``) is
not refused: the flow goes on and the message says the code may still arrive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from allauth.core.exceptions import ImmediateHttpResponse
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse

from ...exceptions import VerificationError

__all__ = ["Refusal", "is_sent_message", "refused", "typed"]

#: allauth's messages that say a code went out: left out after a refusal.
_SENT_MESSAGES = frozenset(
    {"account/messages/phone_verification_sent.txt", "account/messages/login_code_sent.txt"}
)


@dataclass(frozen=True)
class Refusal:
    """What the user is told: the refusal's message (in the request's language) and its
    machine code."""

    message: str
    code: str
    #: The SMS may have gone out all the same (TextFlow did not confirm it).
    may_arrive: bool = False

    @classmethod
    def of(cls, error: VerificationError | ValidationError) -> Refusal:
        if isinstance(error, VerificationError):
            may_arrive = bool(error.extra.get("code_may_arrive"))
            return cls(str(error.message), error.code, may_arrive)
        # A phone number refused as such (InvalidPhoneNumberError): a stored number.
        return cls(error.messages[0], str(error.code or "invalid"))


@dataclass
class _RequestState:
    """What one request learnt: the numbers its phone fields accepted, the refusals to show
    on its form's replay, whether a refusal was shown (so "code sent" is not)."""

    typed: set[str] = field(default_factory=set)
    refused: dict[str, Refusal] = field(default_factory=dict)
    replaying: bool = False
    shown: bool = False


def _state(request: HttpRequest) -> _RequestState:
    state: _RequestState | None = getattr(request, "_textflow_allauth", None)
    if state is None:
        state = _RequestState()
        request._textflow_allauth = state  # type: ignore[attr-defined]
    return state


def typed(request: HttpRequest | None, number: str) -> None:
    """A phone field of ``request``'s form accepted ``number``. When the form is run again
    to show a refusal of that number, raise it as the field's ``ValidationError``."""
    if request is None:
        return
    state = _state(request)
    refusal = state.refused.get(number)
    if state.replaying and refusal is not None:
        raise ValidationError(refusal.message, code=refusal.code)
    state.typed.add(number)


def refused(request: HttpRequest, number: str, refusal: Refusal, adapter: Any) -> None:
    """Show ``refusal`` of an SMS to ``number`` (see the module's docstring).

    Raises ``ImmediateHttpResponse`` with the form again (allauth's middleware and views
    answer with it), or returns once the message is added and the flow may go on.
    """
    state = _state(request)
    if not refusal.may_arrive:
        response = _form_again(request, state, number, refusal)
        if response is not None:
            raise ImmediateHttpResponse(response)
    level = messages.WARNING if refusal.may_arrive else messages.ERROR
    adapter.add_message(request, level, message=refusal.message)
    state.shown = True


def is_sent_message(request: HttpRequest, template: str | None) -> bool:
    """Whether allauth's message ``template`` says a code went out when this request's SMS
    was refused (the refusal is shown instead)."""
    state: _RequestState | None = getattr(request, "_textflow_allauth", None)
    return state is not None and state.shown and template in _SENT_MESSAGES


def _form_views() -> tuple[type[Any], ...]:
    # The views whose form names the number and that send right after it is valid.
    from allauth.account.views import (
        ChangePhoneView,
        LoginView,
        RequestLoginCodeView,
    )

    return (ChangePhoneView, LoginView, RequestLoginCodeView)


def _form_again(
    request: HttpRequest, state: _RequestState, number: str, refusal: Refusal
) -> HttpResponse | None:
    """The response of the request's view run again on its POST, its form now refusing
    ``number``; ``None`` when that is not how this request can show it."""
    match = request.resolver_match
    if state.replaying or request.method != "POST" or number not in state.typed or not match:
        return None
    view_class = getattr(match.func, "view_class", None)
    if view_class is None or not issubclass(view_class, _form_views()):
        return None
    state.refused[number] = refusal
    state.replaying = True
    try:
        view = view_class(**getattr(match.func, "view_initkwargs", {}))
        view.setup(request, *match.args, **match.kwargs)
        # post(), not dispatch(): the dispatch's decorators (login, allauth's rate limits)
        # have already let this request through.
        response: HttpResponse = view.post(request, *match.args, **match.kwargs)
    finally:
        state.replaying = False
    return response
