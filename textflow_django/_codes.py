"""How a code is made, and the text TextFlow's own ``/send-code`` words its SMS in.

``generate_code`` makes every code of ours ("local" ``VERIFY_MODE``, the emulating
backends). ``code_sms_text`` is TextFlow's wording, which the emulating backends (console,
locmem, dummy) copy where they stand in for ``/send-code``; the code SMS this site writes
itself ("local" mode, the contrib integrations) is ``verification.code_text``'s, in the
request's language. The bundled TextFlow emulator (``textflow_django.testing``) keeps a copy
of its own on purpose: it stands for TextFlow, so that the client's reading of the contract
is tested against an independent one.

Free of Django: TextFlow's wording is not translated.
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
