"""The code SMS a site sends itself ("local" mode and the contrib integrations), in the
active language, with the WebOTP line browsers read.

The one home of its wording: ``TEXTFLOW["CODE_MESSAGE"]`` (a template with ``{code}`` and
``{service}``) or the translated default, then, with ``TEXTFLOW["WEBOTP_DOMAIN"]``, the
origin-bound line of the WebOTP format (``@example.com #123456``, the last line of the SMS),
which lets Chrome on Android and Safari on iOS offer the code to the page of that domain.
``textflow`` mode sends TextFlow's own text, which this module does not write.
"""

from __future__ import annotations

import string

from django.utils.translation import gettext

from ..conf import conf

__all__ = ["code_text", "code_template_problem"]


def code_text(code: str, template: str | None = None) -> str:
    """The SMS that carries ``code``: ``template`` (else ``CODE_MESSAGE``, else the default
    in the active language) with ``{code}`` and ``{service}`` filled in, then the WebOTP line
    ``@<domain> #<code>`` when ``WEBOTP_DOMAIN`` is set. ``template`` is formatted with
    :meth:`str.format`; braces meant literally are doubled."""
    service = conf.SERVICE_NAME
    if template is None:
        template = conf.CODE_MESSAGE
    if template is None:
        # Two sentences, not one with an optional part: a translation may need either whole.
        template = (
            gettext("Your verification code for {service} is: {code}")
            if service
            else gettext("Your verification code is: {code}")
        )
    text = template.format(code=code, service=service)
    domain = conf.WEBOTP_DOMAIN
    return text if domain is None else f"{text}\n\n@{domain} #{code}"


def code_template_problem(template: object) -> str | None:
    """What keeps ``template`` from being a code SMS template, or ``None``: it must be a
    ``str.format`` text naming ``{code}``, and no field but ``{code}`` and ``{service}``
    (a brace meant literally is doubled). The one rule for ``CODE_MESSAGE`` and the
    integrations' templates."""
    if not isinstance(template, str):
        return f"is not a text ({type(template).__name__})"
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError:
        return "has a lone brace (write a literal brace twice)"
    if "code" not in fields:
        return "has no {code}"
    others = sorted(fields - {"code", "service"})
    if others:
        return f"names {', '.join(others)}: only {{code}} and {{service}} are filled in"
    return None
