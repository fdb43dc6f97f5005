"""The account adapter that gives django-allauth's phone support textflow-django's SMS.

``ACCOUNT_ADAPTER = "textflow_django.contrib.allauth.adapter.AccountAdapter"``, or, for a
project with an adapter of its own, ``TextFlowPhoneAdapterMixin`` first among its bases::

    class MyAdapter(TextFlowPhoneAdapterMixin, DefaultAccountAdapter): ...

What allauth asks of a site for phone numbers, and how this answers:

- ``send_verification_code_sms``, ``send_unknown_account_sms``,
  ``send_account_already_exists_sms``: through
  :func:`textflow_django.verification.send_code` (allauth's code as ``code``, the text of
  :mod:`._texts`' templates in the active language), so every SMS is held to the cooldown,
  the send caps and the Fraud Guard, and goes through the configured backend. A refusal is
  shown on allauth's pages (:mod:`._refusals`), never raised to a server error; outside a
  request (a project's own call) it is raised as it came.
- ``get_phone``, ``set_phone``, ``get_user_by_phone``: numbers in E.164 (:mod:`._numbers`);
  only verified numbers find a user.
- ``set_phone_verified``: stores the number as verified and reports it with
  :func:`~textflow_django.verification.confirm`, so the Fraud Guard counts the conversion.
- ``phone_form_field``, ``clean_phone``: numbers are read as textflow-django reads them
  (national format with ``DEFAULT_REGION``, country rules), and stored in E.164.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from allauth.account.adapter import DefaultAccountAdapter
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from ... import verification
from ...exceptions import VerificationError
from ...phone import normalize
from . import _numbers, _refusals, _texts

__all__ = ["AccountAdapter", "TextFlowPhoneAdapterMixin"]

# For the type checker the mixin is an allauth adapter (whose methods it extends); at run
# time it is a plain mixin that goes before the project's adapter class.
_Base: Any = DefaultAccountAdapter if TYPE_CHECKING else object


class TextFlowPhoneAdapterMixin(_Base):  # type: ignore[misc]
    """allauth's phone methods through textflow-django; put it first among the bases of an
    allauth account adapter (``DefaultAccountAdapter`` or a subclass)."""

    # -- numbers the user types ------------------------------------------------------------

    def phone_form_field(self, **kwargs: Any) -> Any:
        """allauth's phone field without its E.164-only validator: :meth:`clean_phone`
        reads the number as the rest of the site does (national format too, with
        ``DEFAULT_REGION``)."""
        kwargs.setdefault("validators", [])
        return super().phone_form_field(**kwargs)

    def clean_phone(self, phone: str) -> str:
        """The number in E.164, if textflow-django accepts it (country rules included);
        raises ``InvalidPhoneNumberError`` (a ``ValidationError``, the field's error)."""
        number = normalize(super().clean_phone(phone))
        # Noted for the request, so that a refused SMS to it is shown on this form.
        _refusals.typed(self.request, number)
        return number

    # -- the SMS -----------------------------------------------------------------------------

    def send_verification_code_sms(self, user: Any, phone: str, code: str, **kwargs: Any) -> None:
        """Send allauth's ``code`` (phone verification, login by code, reauthentication)."""
        context = {"user": user, "phone": phone, **kwargs}
        text = _texts.verification_code_text(code, **context)
        self._send_sms(phone, user=user, code=code, text=text)

    def send_unknown_account_sms(self, phone: str, **kwargs: Any) -> None:
        """Tell ``phone`` that no account has it (sent instead of a login code)."""
        self._send_sms(phone, text=_texts.unknown_account_text(phone=phone, **kwargs))

    def send_account_already_exists_sms(self, phone: str, **kwargs: Any) -> None:
        """Tell ``phone`` that it has an account (sent instead of a signup's code)."""
        self._send_sms(phone, text=_texts.account_already_exists_text(phone=phone, **kwargs))

    def _send_sms(
        self, phone: str, *, text: str, user: Any = None, code: str | None = None
    ) -> None:
        request: HttpRequest | None = self.request
        try:
            # allauth checks its code: no session handle, so check_code cannot reach it.
            verification.send_code(
                phone, request=request, user=user, session=False, code=code, text=text
            )
        except (VerificationError, ValidationError) as error:
            if request is None:  # sent outside a request: no page to show it on
                raise
            _refusals.refused(request, phone, _refusals.Refusal.of(error), self)

    def add_message(
        self,
        request: HttpRequest,
        level: int,
        message_template: str | None = None,
        message_context: dict[str, Any] | None = None,
        extra_tags: str = "",
        message: str | None = None,
    ) -> None:
        """allauth's messages, but for "a code was sent" after a refusal (it was not)."""
        if _refusals.is_sent_message(request, message_template):
            return
        super().add_message(
            request,
            level,
            message_template=message_template,
            message_context=message_context,
            extra_tags=extra_tags,
            message=message,
        )

    # -- where numbers are kept ----------------------------------------------------------

    def get_phone(self, user: Any) -> tuple[str, bool] | None:
        """``(number, verified)`` of ``user``, or ``None``."""
        return _numbers.get_phone(user)

    def set_phone(self, user: Any, phone: str, verified: bool) -> None:
        """Make ``phone`` the number of ``user``."""
        _numbers.set_phone(user, phone, verified)

    def set_phone_verified(self, user: Any, phone: str) -> None:
        """``user`` proved ``phone`` with allauth's code: store it as verified, and report
        the code as used (the Fraud Guard's conversion; ``phone_verified`` is sent)."""
        _numbers.set_phone(user, phone, True)
        verification.confirm(phone, request=self.request, user=user)

    def get_user_by_phone(self, phone: str) -> Any:
        """The user whose verified number ``phone`` is, or ``None``."""
        return _numbers.find_user(phone)


class AccountAdapter(TextFlowPhoneAdapterMixin, DefaultAccountAdapter):  # type: ignore[misc]
    """allauth's ``DefaultAccountAdapter`` with textflow-django's phone numbers and SMS."""
