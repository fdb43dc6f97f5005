"""Plain Django forms for the send-code / verify-code flow, for projects without DRF.

Thin, like the API views: a form parses the input, calls the verification service and turns
its refusals into form errors. No rule lives here (see :mod:`textflow_django.verification`).

    form = SendCodeForm(request.POST)
    sent = form.send(request=request)
    if sent is None:
        # form.errors says why; form.error is the service's refusal (or None), so a view
        # can show form.error.retry_after or answer with form.error.status_code.
        ...

Every error added from a refusal carries the refusal's stable ``code`` (``"invalid_code"``,
``"resend_too_soon"``...), so templates and views can branch on
``form.has_error(NON_FIELD_ERRORS, "resend_too_soon")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from . import verification
from .exceptions import CountryNotAllowed, DestinationBlocked, InvalidCode, VerificationError
from .fields import PhoneNumberFormField
from .phone import InvalidPhoneNumberError
from .verification import CodeSent, Verified, code_validator

if TYPE_CHECKING:
    from django.http import HttpRequest

__all__ = ["SendCodeForm", "VerifyCodeForm", "code_validator"]

_T = TypeVar("_T")


#: Refusals that are about the number the user typed, shown on the ``phone_number`` field.
_PHONE_FIELD_ERRORS: tuple[type[VerificationError], ...] = (CountryNotAllowed, DestinationBlocked)


def _phone_number_field() -> forms.Field:
    # The country rules are the service's: answered as the refusal "country_not_allowed",
    # read at call time, rather than by a field that could disagree with it.
    return PhoneNumberFormField(label=_("Phone number"), check_countries=False)


class _ServiceForm(forms.Form):
    """Runs a service call on valid data and turns its refusals into form errors."""

    #: The service's refusal from the last :meth:`send`/:meth:`verify`, or None.
    error: VerificationError | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.error = None

    def _call(self, action: Callable[[], _T]) -> _T | None:
        self.error = None
        if not self.is_valid():
            return None
        try:
            return action()
        except InvalidPhoneNumberError as err:
            # The number is well-formed but TextFlow (or a rule of phone.py) refused it.
            self.add_error("phone_number", err)
        except VerificationError as err:
            self.error = err
            field = "phone_number" if isinstance(err, _PHONE_FIELD_ERRORS) else None
            self.add_error(field, ValidationError(self._message(err), code=err.code))
        return None

    def _message(self, err: VerificationError) -> str:
        # Translated now, in the language of the request the form is processed in.
        return str(err.message)


class SendCodeForm(_ServiceForm):
    """Ask for a verification code to be texted to ``phone_number``.

    Call :meth:`send` on a bound form. ``cleaned_data["phone_number"]`` is in E.164.
    """

    phone_number = _phone_number_field()

    def send(self, request: HttpRequest | None = None, user: Any = None) -> CodeSent | None:
        """Validate the form and have :func:`verification.send_code` text a code.

        Returns the :class:`~textflow_django.verification.CodeSent`, or None when the form
        is invalid or the service refused. On a refusal, ``self.error`` holds the
        :class:`~textflow_django.exceptions.VerificationError` (with ``retry_after``) and
        the form has an error with its ``code``: on ``phone_number`` for
        ``country_not_allowed``, a non-field error otherwise. A number the service finds
        invalid is a ``phone_number`` error (``self.error`` stays None).

        Raises only what the service raises outside its refusals (a misconfiguration).
        """
        return self._call(
            lambda: verification.send_code(
                self.cleaned_data["phone_number"], request=request, user=user
            )
        )


class VerifyCodeForm(_ServiceForm):
    """Check the ``code`` a user received for ``phone_number``.

    Call :meth:`verify` on a bound form. The code field accepts what ``code_validator``
    does: ASCII digits, ``CODE_LENGTH`` of them in "local" mode (4 to 10 in "textflow").
    """

    phone_number = _phone_number_field()
    code = forms.CharField(
        label=_("Code"),
        max_length=10,
        validators=[code_validator],
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )

    def verify(
        self,
        request: HttpRequest | None = None,
        user: Any = None,
        verification_id: str | None = None,
    ) -> Verified | None:
        """Validate the form and have :func:`verification.check_code` check the code: the
        one ``verification_id`` names, else the one ``request``'s session asked for (see
        ``check_code``; a session-backed flow needs neither argument but the request).

        Returns the :class:`~textflow_django.verification.Verified` (with its ``token``),
        or None when the form is invalid or the service refused. On a refusal,
        ``self.error`` holds the ``VerificationError`` and the form has an error with its
        ``code``: on ``phone_number`` for ``country_not_allowed``, a non-field error
        otherwise (``invalid_code``, ``expired``, ``too_many_attempts``...); for
        ``invalid_code`` the message says how many attempts are left when that is known. A
        number TextFlow refuses is a ``phone_number`` error (``self.error`` stays None).

        Raises only what the service raises outside its refusals (a misconfiguration).
        """
        return self._call(
            lambda: verification.check_code(
                self.cleaned_data["phone_number"],
                self.cleaned_data["code"],
                request=request,
                user=user,
                verification_id=verification_id,
            )
        )

    def _message(self, err: VerificationError) -> str:
        if not isinstance(err, InvalidCode) or err.attempts_left is None:
            return super()._message(err)
        if err.attempts_left == 0:
            left = gettext("No attempts left: request a new code.")
        else:
            left = ngettext(
                "%(count)d attempt left.", "%(count)d attempts left.", err.attempts_left
            ) % {"count": err.attempts_left}
        return f"{err.message} {left}"
