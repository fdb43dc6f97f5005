"""The backend contract: the TextFlow API surface as an object.

A backend is what the rest of the app talks to instead of TextFlow itself. The real one
(``textflow.TextFlowBackend``) calls the API through ``TextFlowClient``; the emulating ones
(``console``, ``locmem``, ``dummy``) answer in-process so a project runs and tests with no
account and no network.

The opt-out list (:mod:`textflow_django.optouts`) is honoured here, once for every backend,
in the two operations that text whatever the caller wrote:

- :meth:`BaseBackend.send_sms` refuses a number on the list (``TextFlowOptedOut``, nothing
  sent) unless the caller passes ``transactional=True``: one indexed query a send.
- :meth:`BaseBackend.bulk_sms` leaves the batch's numbers on the list out and sends to the
  others (one query a batch); with none left it sends nothing and answers
  ``submitted=0``. ``textflow_bulk_sms`` leaves them out long before (at ingest, and again
  as it reads each batch, where it counts them): this is the guarantee for every other
  caller.

Each number refused or left out is the event ``textflow.send_sms.opted_out``, the number
masked. Backends implement :meth:`~BaseBackend._send_sms` and :meth:`~BaseBackend._bulk_sms`,
the delivery steps behind the check. A subclass that overrides ``send_sms`` or ``bulk_sms``
itself (the contract before opt-outs existed) is held to the same rule: its method is
wrapped when the class is created, so no backend can forget the list.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from .. import optouts, phone
from .._events import emit
from ..client import BalanceResult, BulkCountResult, BulkResult, CodeResult, SMSResult, VerifyResult
from ..exceptions import TextFlowOptedOut

__all__ = ["BaseBackend", "opt_outs_checked"]

#: The numbers of the send in progress whose opt-out decision is taken (checked, or waived
#: as transactional): a subclass's ``send_sms``/``bulk_sms`` that calls its parent's is
#: neither checked twice nor refused after its caller passed ``transactional=True``.
_decided: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "textflow_opt_out_decided", default=frozenset()
)
#: Marks a ``send_sms``/``bulk_sms`` that already honours the list (the base's, or a
#: subclass's wrapped by ``__init_subclass__``).
_HONOURS = "_textflow_honours_opt_outs"


@contextlib.contextmanager
def opt_outs_checked(numbers: Iterable[str]) -> Iterator[None]:
    """Within the block, a send to ``numbers`` skips the opt-out check: only for a caller
    that read them against the list itself, moments before, in the statement that fetched
    them (the bulk sender: its batch then costs no second query). Any other number is
    still checked."""
    token = _decided.set(frozenset(numbers))
    try:
        yield
    finally:
        _decided.reset(token)


def _left_out(number: str) -> str:
    """Report ``number`` refused or left out (the event, masked); return it masked."""
    masked = phone.mask(number)
    emit("textflow.send_sms.opted_out", number=masked)
    return masked


def _one(number: str, transactional: bool, deliver: Callable[[], SMSResult]) -> SMSResult:
    """``deliver()`` the SMS to ``number`` unless the number is on the list and the send is
    not ``transactional``: the rule of every ``send_sms``.

    Raises:
        TextFlowOptedOut: the number is on the list; nothing was sent.
    """
    if number in _decided.get():
        return deliver()
    if not transactional and optouts.is_opted_out(number):
        raise TextFlowOptedOut(_left_out(number))
    token = _decided.set(frozenset((number,)))
    try:
        return deliver()
    finally:
        _decided.reset(token)


def _many(
    numbers: Sequence[str],
    transactional: bool,
    deliver: Callable[[Sequence[str]], BulkResult],
) -> BulkResult:
    """``deliver(numbers)`` less the ones on the list (all of them when ``transactional``):
    the rule of every ``bulk_sms``. A batch whose every number is on the list sends nothing
    (``submitted=0``); an empty batch goes to ``deliver`` as it is (TextFlow refuses it)."""
    numbers = list(numbers)
    decided = _decided.get()
    if not transactional and numbers and not decided.issuperset(numbers):
        listed = optouts.opted_out_among(numbers)
        if listed:
            for number in numbers:
                if number in listed:
                    _left_out(number)
            numbers = [number for number in numbers if number not in listed]
            if not numbers:
                return BulkResult(submitted=0, message="Every number opted out", accepted=0)
    token = _decided.set(frozenset(numbers))
    try:
        return deliver(numbers)
    finally:
        _decided.reset(token)


def _passes_flag(method: Callable[..., Any]) -> bool:
    """Whether ``method`` takes ``transactional`` (one written before it existed does not)."""
    parameters = inspect.signature(method).parameters
    return "transactional" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def _wrap_send_sms(send: Callable[..., SMSResult]) -> Callable[..., SMSResult]:
    """A subclass's own ``send_sms``, made to honour the list first."""
    passes_flag = _passes_flag(send)

    @functools.wraps(send)
    def send_sms(
        self: BaseBackend, phone_number: str, text: str, *, transactional: bool = False
    ) -> SMSResult:
        extra = {"transactional": transactional} if passes_flag else {}
        return _one(phone_number, transactional, lambda: send(self, phone_number, text, **extra))

    setattr(send_sms, _HONOURS, True)
    return send_sms


def _wrap_bulk_sms(send: Callable[..., BulkResult]) -> Callable[..., BulkResult]:
    """A subclass's own ``bulk_sms``, made to leave opted-out numbers out first."""
    passes_flag = _passes_flag(send)

    @functools.wraps(send)
    def bulk_sms(
        self: BaseBackend, phone_numbers: Sequence[str], text: str, *, transactional: bool = False
    ) -> BulkResult:
        extra = {"transactional": transactional} if passes_flag else {}
        return _many(
            phone_numbers, transactional, lambda numbers: send(self, numbers, text, **extra)
        )

    setattr(bulk_sms, _HONOURS, True)
    return bulk_sms


#: The public operations that honour the list, their delivery steps, and their wrappers.
_GUARDED: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("send_sms", "_send_sms", _wrap_send_sms),
    ("bulk_sms", "_bulk_sms", _wrap_bulk_sms),
)


class BaseBackend(abc.ABC):
    """Subclasses implement the five TextFlow operations (and may implement ``balance``):
    ``_send_sms`` and ``_bulk_sms`` (behind the public :meth:`send_sms` and
    :meth:`bulk_sms`, which honour the opt-out list), ``send_code``, ``verify_code`` and
    ``bulk_count``.

    Contract for every implementation, checked by the shared contract test suite:

    - Numbers arrive in E.164; one TextFlow would reject raises ``TextFlowRejectedNumber``.
    - ``send_code`` issues a new code that *replaces* the number's previous one, valid for
      ``seconds``; ``verify_code`` answers ``valid=False`` for a wrong or expired code and
      never raises for it.
    - Failures raise ``TextFlowError`` subclasses, with ``maybe_sent`` set honestly.
    - Backends are created per thread by ``get_backend()`` and must read settings at call
      time rather than keeping copies that ``override_settings`` could not change.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for public, step, wrap in _GUARDED:
            own = cls.__dict__.get(public)
            if own is None or getattr(own, _HONOURS, False):
                continue
            # The class overrides the public method itself: its method runs behind the
            # opt-out check, and is its delivery step too if it has none of its own.
            setattr(cls, public, wrap(own))
            if getattr(getattr(cls, step, None), "__isabstractmethod__", False):
                setattr(cls, step, own)

    def __init__(self, **options: Any) -> None:
        self.options = options

    def send_sms(self, phone_number: str, text: str, *, transactional: bool = False) -> SMSResult:
        """Send one SMS, unless ``phone_number`` is on the opt-out list.

        ``transactional=True`` sends it even then: only for a message the person asked
        for (a verification code, a receipt), never marketing.

        Raises:
            TextFlowOptedOut: the number opted out and the send is not transactional
                (nothing was sent); else what :meth:`_send_sms` raises.
        """
        return _one(phone_number, transactional, lambda: self._send_sms(phone_number, text))

    setattr(send_sms, _HONOURS, True)

    @abc.abstractmethod
    def _send_sms(self, phone_number: str, text: str) -> SMSResult:
        """Deliver one SMS: the backend's part of :meth:`send_sms`, called once the
        opt-out list allowed it (never call it directly: it skips the list)."""

    @abc.abstractmethod
    def send_code(
        self, phone_number: str, service_name: str | None = None, seconds: int | None = None
    ) -> CodeResult:
        """Generate a verification code, text it, and remember it for ``seconds``."""

    @abc.abstractmethod
    def verify_code(self, phone_number: str, code: str) -> VerifyResult:
        """Tell whether ``code`` is the live code of ``phone_number``."""

    def bulk_sms(
        self, phone_numbers: Sequence[str], text: str, *, transactional: bool = False
    ) -> BulkResult:
        """Start delivery of ``text`` to every number of one batch not on the opt-out list
        (all of them with ``transactional=True``).

        Returns what :meth:`_bulk_sms` returns for the numbers sent to; when every number
        is on the list, nothing is sent and ``submitted`` is 0.
        """
        return _many(phone_numbers, transactional, lambda numbers: self._bulk_sms(numbers, text))

    setattr(bulk_sms, _HONOURS, True)

    @abc.abstractmethod
    def _bulk_sms(self, phone_numbers: Sequence[str], text: str) -> BulkResult:
        """Start delivery of one batch: the backend's part of :meth:`bulk_sms`, given the
        numbers the opt-out list allowed (never call it directly: it skips the list)."""

    @abc.abstractmethod
    def bulk_count(self) -> BulkCountResult:
        """How many bulk recipients are still waiting for their SMS."""

    def balance(self) -> BalanceResult:
        """The account's credit. Optional: the default says the backend cannot tell."""
        raise NotImplementedError(f"{type(self).__name__} does not report a balance")
