"""The one home of a verification code's two rules on our side: how a code is made, and the
text of the SMS that carries it.

"local" ``VERIFY_MODE`` (codes of our own) and the emulating backends (console, locmem,
dummy: they stand in for TextFlow's ``/send-code``) both call these. The bundled TextFlow
emulator (``textflow_django.testing``) keeps a copy of its own on purpose: it stands for
TextFlow, so that the client's reading of the contract is tested against an independent one.

Free of Django: the wording follows TextFlow's own code SMS, which is not translated.
"""

from __future__ import annotations

import secrets
from typing import Final

__all__ = ["CODE_LENGTH", "code_sms_text", "generate_code"]

#: Digits of a code we generate by default (NIST SP 800-63B asks for at least 6); also the
#: default of ``TEXTFLOW["CODE_LENGTH"]`` (``conf`` reads it from here).
CODE_LENGTH: Final = 6


def generate_code(length: int = CODE_LENGTH) -> str:
    """A fresh numeric code of ``length`` digits from the OS's CSPRNG (leading zeros kept)."""
    return f"{secrets.randbelow(10**length):0{length}d}"


def code_sms_text(code: str, service_name: str | None = None) -> str:
    """The code SMS, worded as TextFlow words it: ``Your verification code for <service> is:
    <code>``, or without ``for <service>`` when no service name is set."""
    if service_name:
        return f"Your verification code for {service_name} is: {code}"
    return f"Your verification code is: {code}"
