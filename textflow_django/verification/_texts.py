"""The code SMS a site sends itself ("local" mode and the contrib integrations), in the
active language, with the WebOTP line browsers read.

The one home of its wording: ``TEXTFLOW["CODE_MESSAGE"]`` (a template with ``{code}`` and
``{service}``) or the translated default, then, with ``TEXTFLOW["WEBOTP_DOMAIN"]``, the
origin-bound line of the WebOTP format (``@example.com #123456``, the last line of the SMS),
which lets Chrome on Android and Safari on iOS offer the code to the page of that domain.
``textflow`` mode sends TextFlow's own text, which this module does not write.
"""

from __future__ import annotations

from django.utils.translation import gettext

from ..conf import conf

__all__ = ["code_text", "render_code_message", "webotp_line"]


def code_text(code: str, template: str | None = None) -> str:
    """The SMS that carries ``code``: ``template`` (else ``CODE_MESSAGE``, else the default
    in the active language) with ``{code}`` and ``{service}`` filled in, then the WebOTP line
    when ``WEBOTP_DOMAIN`` is set. ``template`` is formatted with :meth:`str.format`; braces
    meant literally are doubled."""
    text = render_code_message(code, template, conf.SERVICE_NAME)
    domain = conf.WEBOTP_DOMAIN
    return text if domain is None else f"{text}\n\n{webotp_line(domain, code)}"


def render_code_message(code: str, template: str | None, service: str) -> str:
    """``template`` (else ``CODE_MESSAGE``, else the default for ``service`` in the active
    language) formatted with ``code`` and ``service``."""
    if template is None:
        template = conf.CODE_MESSAGE
    if template is None:
        # Two sentences, not one with an optional part: a translation may need either whole.
        template = (
            gettext("Your verification code for {service} is: {code}")
            if service
            else gettext("Your verification code is: {code}")
        )
    return template.format(code=code, service=service)


def webotp_line(domain: str, code: str) -> str:
    """The WebOTP format's origin-bound line: ``@<domain> #<code>``."""
    return f"@{domain} #{code}"
