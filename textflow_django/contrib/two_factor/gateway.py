"""The gateway django-two-factor-auth sends its SMS tokens through
(``TWO_FACTOR_SMS_GATEWAY``).

Contract of :meth:`TextFlowGateway.send_sms`:

- The token two-factor made is sent with
  :func:`textflow_django.verification.send_code` (``code=token``), in the two-factor
  wording of :meth:`TextFlowGateway.sms_text` (the active language, the WebOTP line when
  ``WEBOTP_DOMAIN`` is set). So the same ``RESEND_COOLDOWN``, ``SEND_LIMITS`` (per number,
  client address and network, site-wide and per country) and Fraud Guard apply as to the
  site's own codes. The token stays two-factor's: two-factor checks it, and the receivers of
  ``_receivers`` report a right one with ``confirm()``.
- The request is two-factor's current one (its ``ThreadLocals`` middleware; check
  ``textflow.W121``): the per-address caps need it.
- A refusal (a cap, the cooldown, the Fraud Guard, a country not accepted, TextFlow failing)
  is not raised into two-factor's views, whose login page would answer it with a server
  error: it becomes an error message of ``django.contrib.messages`` on the request (the
  refusal's own translated text, ``VerificationError.message``), and the page two-factor
  renders next (the token step, which still offers backup tokens and other devices) shows
  it. With no request to tell (no middleware, a call outside a request) or no messages
  middleware (check ``textflow.W122``), the refusal is raised as it is.

:meth:`TextFlowGateway.make_call` raises :class:`VoiceCallsUnsupported`: TextFlow sends
SMS only (check ``textflow.W120`` warns when two-factor's phone-call method is on).
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils.translation import gettext
from two_factor.middleware.threadlocals import (  # type: ignore[import-untyped, unused-ignore]
    get_current_request,
)

from ... import verification
from ...conf import conf
from ...exceptions import TextFlowConfigurationError, VerificationError

__all__ = ["TextFlowGateway", "VoiceCallsUnsupported", "e164"]

#: The app whose receivers report the tokens two-factor accepted.
APP = "textflow_django.contrib.two_factor"


class VoiceCallsUnsupported(TextFlowConfigurationError):
    """Two-factor asked TextFlow's gateway for a phone call: TextFlow sends SMS only."""


class TextFlowGateway:
    """A django-two-factor-auth gateway that sends SMS tokens through textflow-django.

    Two-factor makes one per challenge (``TWO_FACTOR_SMS_GATEWAY``) with no arguments.
    Subclass it to change the wording: set :attr:`sms_template`, or override
    :meth:`sms_text`.
    """

    #: The SMS, formatted with ``{code}`` and ``{service}`` (``TEXTFLOW["SERVICE_NAME"]``);
    #: ``None``: the translated default of :meth:`sms_text`.
    sms_template: str | None = None

    def sms_text(self, token: str) -> str:
        """The SMS that carries ``token``, in the active language (the request's, with
        ``LocaleMiddleware``), followed by the WebOTP line when ``WEBOTP_DOMAIN`` is set."""
        template = self.sms_template
        if template is None:
            # Two sentences, not one with an optional part: a translation may need either whole.
            template = (
                gettext("Your login code for {service} is: {code}")
                if conf.SERVICE_NAME
                else gettext("Your login code is: {code}")
            )
        return verification.code_text(token, template=template)

    def send_sms(self, device: Any, token: str) -> None:
        """Send ``token`` to ``device.number`` (a two-factor ``PhoneDevice``); see the
        module's docstring for what a refusal becomes.

        Raises :class:`~textflow_django.exceptions.TextFlowConfigurationError` when this app
        is not in ``INSTALLED_APPS``: no token would ever be confirmed, and the Fraud Guard
        would take every two-factor SMS for one nobody used.
        """
        if not apps.is_installed(APP):
            raise TextFlowConfigurationError(
                f"TextFlowGateway needs {APP!r} in INSTALLED_APPS: it reports the tokens "
                "two-factor accepts, without which the Fraud Guard counts every two-factor "
                "SMS as unused."
            )
        request: HttpRequest | None = get_current_request()
        try:
            verification.send_code(
                e164(device.number),
                request=request,
                user=device.user,
                # Two-factor checks its token: the session is no handle to it.
                session=False,
                code=token,
                text=self.sms_text(token),
            )
        except (VerificationError, ValidationError) as refusal:
            if request is None or not _tell(request, refusal):
                raise

    def make_call(self, device: Any, token: str) -> None:
        """TextFlow has no voice calls: always raises :class:`VoiceCallsUnsupported`."""
        raise VoiceCallsUnsupported(
            "TextFlow sends SMS only: it cannot make two-factor's phone calls. Remove "
            "TWO_FACTOR_CALL_GATEWAY (two-factor then offers text messages only) or name a "
            "gateway that can call."
        )


def e164(number: object) -> str:
    """A ``PhoneDevice.number`` (a ``phonenumber_field`` ``PhoneNumber``, or the text it was
    set from) as a string for ``send_code`` and ``confirm``, which normalise it."""
    return str(getattr(number, "as_e164", number))


def _tell(request: HttpRequest, refusal: VerificationError | ValidationError) -> bool:
    """Put the refusal's message on the request for the next page; False when the request
    has no messages (``MessageMiddleware`` is not installed)."""
    if isinstance(refusal, VerificationError):
        text = str(refusal.message)
    else:  # the number, which two-factor accepted, is not one we can send to
        text = " ".join(str(message) for message in refusal.messages)
    try:
        messages.error(request, text)
    except messages.MessageFailure:
        return False
    return True
