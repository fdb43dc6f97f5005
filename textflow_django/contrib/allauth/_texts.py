"""The SMS texts the adapter sends, from templates rendered in the active language.

- ``textflow_django/allauth/sms/verification_code.txt``: the code SMS of phone verification
  and login by code. As shipped it renders nothing, and the SMS is textflow-django's own
  code SMS (:func:`~textflow_django.verification.code_text`: ``TEXTFLOW["CODE_MESSAGE"]`` or
  its translated default, then the WebOTP line with ``WEBOTP_DOMAIN``). A project's own
  template renders the wording instead, with ``{code}`` and ``{service}`` where those go
  (any other brace is text, whoever wrote it) and gets the WebOTP line too. Its context:
  ``user``, ``phone``, ``reauthentication``, ``service``.
- ``.../unknown_account.txt`` and ``.../account_already_exists.txt``: the SMS allauth sends
  instead of a code when no account has the number, or when a signup names a number that
  has one (so that nobody learns which numbers have accounts). Context: ``phone``,
  ``service``. No code: sent as they render.
"""

from __future__ import annotations

from typing import Any

from django.template.loader import render_to_string

from ...conf import conf
from ...verification import code_text

__all__ = [
    "account_already_exists_text",
    "render_code_template",
    "unknown_account_text",
    "verification_code_text",
]

_TEMPLATES = "textflow_django/allauth/sms/"


def _render(name: str, context: dict[str, Any]) -> str:
    # No request: an SMS needs no context processor, and must not depend on one.
    context = {"service": conf.SERVICE_NAME, **context}
    return render_to_string(f"{_TEMPLATES}{name}.txt", context).strip()


def render_code_template(context: dict[str, Any]) -> str:
    """The code SMS's template (``{code}``, ``{service}``) as the project words it; ``""``
    for textflow-django's own (the shipped template renders nothing).

    What the Django template renders from its context (a username with a brace in it) is
    text, never ``str.format`` syntax: every brace is doubled but those of ``{code}`` and
    ``{service}``, the only placeholders."""
    rendered = _render("verification_code", context)
    escaped = rendered.replace("{", "{{").replace("}", "}}")
    return escaped.replace("{{code}}", "{code}").replace("{{service}}", "{service}")


def verification_code_text(code: str, **context: Any) -> str:
    """The SMS that carries allauth's ``code``."""
    return code_text(code, template=render_code_template(context) or None)


def unknown_account_text(**context: Any) -> str:
    """The SMS to a number no account has, sent instead of a login code."""
    return _render("unknown_account", context)


def account_already_exists_text(**context: Any) -> str:
    """The SMS to a number that has an account, sent instead of a signup's code."""
    return _render("account_already_exists", context)
