"""The rules a send and a check share: which caps apply to a request, what a refusal by a
cap tells the log and the receivers, where a session keeps its codes' handles, the caller,
the number, and the keyed hash of a local-mode code.

``_sending`` (:func:`send_code`) and ``_checking`` (:func:`check_code`) hold the two
sequences of rules; this module holds what both need, so each rule has one home.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.utils.crypto import salted_hmac
from django.utils.deconstruct import deconstructible
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext_lazy

from .. import phone, signals
from .._client_ip import ip_scope, network_scope
from .._codes import CODE_LENGTH
from .._e164 import CODE_RE
from .._events import emit
from ..conf import conf
from ..exceptions import CountryNotAllowed
from ..models import PhoneVerification
from ..ratelimit import Rate, RateLimitStore
from ._failures import store_calls

if TYPE_CHECKING:
    from django.http import HttpRequest

__all__ = [
    "LOCAL_CODE_LENGTH",
    "SESSION_KEY",
    "caller",
    "caps",
    "code_validator",
    "destination",
    "hash_code",
    "matches_hash",
    "normalize",
    "recall",
    "report_refusal",
    "remember",
]

#: Digits of a code generated in "local" mode by default (``CODE_LENGTH`` sets them).
LOCAL_CODE_LENGTH = CODE_LENGTH
#: Where a session remembers the ``verification_id`` of the codes it asked for, by a keyed
#: hash of the number (:func:`_session_slot`): the session data holds no number.
SESSION_KEY = "textflow_verifications"
#: The salt of that hash (``salted_hmac`` with ``SECRET_KEY``), and the hash's shape.
_SESSION_SALT = "textflow_django.verification.session"
_SLOT_RE = re.compile(r"[0-9a-f]{64}")
#: Numbers a session remembers at most (the oldest is forgotten first).
SESSION_NUMBERS = 5


@deconstructible
class CodeValidator:
    """A code as a user may type it: the one rule forms and serializers validate with.

    ASCII digits only (code ``invalid``), as many as the codes in force have (code
    ``length``): ``CODE_LENGTH`` in "local" mode, read at call time; 4 to 10 in "textflow"
    mode, whose codes TextFlow makes. A code of the wrong length can never be right, so it
    is refused here, with a message saying how long a code is, and costs no attempt. (A code
    sent before ``CODE_LENGTH`` changed is refused too, until it expires.)
    """

    def __call__(self, value: object) -> None:
        if not isinstance(value, str) or not value.isascii() or not value.isdigit():
            raise ValidationError(_("Enter the code you received, digits only."), code="invalid")
        if conf.VERIFY_MODE == "local":
            length = conf.CODE_LENGTH
            if len(value) != length:
                raise ValidationError(
                    ngettext_lazy(
                        "Enter the %(length)d-digit code you received.",
                        "Enter the %(length)d-digit code you received.",
                        "length",
                    ),
                    code="length",
                    params={"length": length},
                )
        elif CODE_RE.fullmatch(value) is None:
            raise ValidationError(_("Enter the code you received: 4 to 10 digits."), code="length")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CodeValidator)

    def __hash__(self) -> int:
        return hash(CodeValidator)


#: The validator instance forms and serializers use.
code_validator = CodeValidator()
_HASH_SALT = "textflow_django.verification.code"


def caller(request: HttpRequest | None, user: Any) -> Any:
    if user is None and request is not None:
        user = getattr(request, "user", None)
    return user if user is not None and getattr(user, "is_authenticated", False) else None


def normalize(phone_number: object) -> str:
    return destination(phone_number)[0]


def destination(phone_number: object) -> tuple[str, str]:
    """The number in E.164 and its ISO region; raises ``InvalidPhoneNumberError`` or
    ``CountryNotAllowed``."""
    try:
        parsed = phone.parse(phone_number)
    except phone.CountryNotAllowedError as err:
        raise CountryNotAllowed() from err
    return parsed.e164, parsed.region


def hash_code(number: str, code: str, salt: str) -> str:
    """A keyed hash (SECRET_KEY-derived HMAC-SHA256) of a local-mode code."""
    digest = salted_hmac(_HASH_SALT, f"{salt}:{number}:{code}", algorithm="sha256").hexdigest()
    return f"{salt}${digest}"


def matches_hash(stored: str, number: str, code: str) -> bool:
    salt, _sep, _digest = stored.partition("$")
    return hmac.compare_digest(stored.encode(), hash_code(number, code, salt).encode())


def caps(
    kind: str,
    limits: Mapping[str, Sequence[Rate]],
    number: str,
    ip: str | None,
    region: str | None = None,
) -> list[tuple[str, Rate]]:
    """The store key and rate of every ``kind`` cap ("send" or "fail") on this number, the
    client's address (an IPv6 /64) and its network (an IPv4 /24, an IPv6 /48), and for
    sends the site's budgets: every code (``"global"``) and per destination ``region``."""
    subjects = (
        ("number", number),
        ("ip", ip and ip_scope(ip)),
        ("network", ip and network_scope(ip)),
        ("global", "*"),
        ("country", region),
    )
    return [
        (f"{kind}:{scope}:{subject}", rate)
        for scope, subject in subjects
        if subject is not None
        for rate in limits.get(scope, ())
    ]


def capped_scopes(store: RateLimitStore, hits: Sequence[tuple[str, Rate]]) -> list[str]:
    """The scopes (``"number"``, ``"ip"``, ``"network"``, ``"global"``, ``"country"``, and
    the Fraud Guard's ``"prefix"`` and ``"new_country"``) whose cap refused, read back after
    a refusal (the refusal itself does not say which)."""
    capped = []
    for key, rate in hits:
        scope = key.split(":", 2)[1]
        if scope not in capped and store.peek(key, rate) is not None:
            capped.append(scope)
    return capped


def report_refusal(
    action: str,
    number: str,
    store: RateLimitStore,
    hits: Sequence[tuple[str, Rate]],
    retry_after: int,
    request: HttpRequest | None,
) -> None:
    """A cap refused a send or a check: report it (``textflow.send_code.refused`` or
    ``textflow.verify_code.failed``, ``reason=rate_limited`` with the capped scopes) and
    tell the receivers of ``rate_limited`` (the number's own send cap spent by someone is
    what a stranger can still do to its owner: the Fraud Guard watches for it)."""
    with store_calls(settled=True):
        scopes = capped_scopes(store, hits)
    emit(
        "textflow.send_code.refused" if action == "send" else "textflow.verify_code.failed",
        reason="rate_limited",
        number=phone.mask(number),
        scopes=scopes or "?",
        retry_after=retry_after,
    )
    signals.rate_limited.send(
        sender=PhoneVerification,
        phone_number=number,
        action=action,
        scopes=tuple(scopes),
        retry_after=retry_after,
        request=request,
    )


def _session_slot(number: str) -> str:
    """Where a session keeps the handle for ``number``: a keyed hash of it (SHA-256 HMAC
    with ``SECRET_KEY``), so a session store (a database row, a cache entry, a signed
    cookie, which the browser holds) keeps no phone number, and an erasure need not find
    one there; a handle alone names no number either."""
    return salted_hmac(_SESSION_SALT, number, algorithm="sha256").hexdigest()


def _known(session: Any) -> dict[str, str]:
    """The session's handles by slot. Entries of another shape (a session written before
    the slots were hashes, keyed by the number itself) are left out: treated as absent,
    and dropped at the next :func:`remember`."""
    known = session.get(SESSION_KEY)
    if not isinstance(known, Mapping):
        return {}
    return {
        slot: handle
        for slot, handle in known.items()
        if isinstance(slot, str) and _SLOT_RE.fullmatch(slot) and isinstance(handle, str)
    }


def remember(request: HttpRequest | None, number: str, handle: str) -> str | None:
    """Keep the handle of the code just asked for in the request's session (the fallback
    for clients that do not pass ``verification_id``), under :func:`_session_slot`;
    return the handle it replaces."""
    session = getattr(request, "session", None)
    if session is None:
        return None
    known = _known(session)
    slot = _session_slot(number)
    previous = known.pop(slot, None)
    known[slot] = handle
    while len(known) > SESSION_NUMBERS:
        known.pop(next(iter(known)))
    session[SESSION_KEY] = known
    return previous


def recall(request: HttpRequest | None, number: str) -> str | None:
    """The handle the request's session holds for ``number``, if any."""
    session = getattr(request, "session", None)
    if session is None:
        return None
    return _known(session).get(_session_slot(number))
