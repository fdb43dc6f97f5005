"""A typed client for the TextFlow SMS API, usable on its own: importing it loads no Django.

    >>> client = TextFlowClient(api_key="...")
    >>> client.send_sms("+11234567890", "Hello").price
    0.05

Contract:

- One pooled ``requests.Session`` per client (pass ``session=`` to share or instrument one),
  a timeout on every call, and a ``User-Agent`` naming this library and its version. How a
  request travels (straight to the session adapter's urllib3 pool, or through requests) is
  the transport's business: see :mod:`textflow_django.client._transport`.
- Every failure raises a :class:`TextFlowError` subclass carrying the HTTP status and
  TextFlow's message, never the API key. Arguments the client cannot work with raise
  :class:`ClientConfigurationError` (a ``ValueError``; the Django backend turns it into
  ``TextFlowConfigurationError``, an ``ImproperlyConfigured``).
- A request is retried only when the connection failed *before* the request was sent
  (refused, unresolvable, connect timeout). Anything later (a 5xx, a read timeout, a reset,
  a garbled body) may mean TextFlow acted on it: re-sending could deliver a second SMS, so it
  is raised with ``maybe_sent=True`` instead.
- The whole answer must arrive within ``timeout`` seconds: a server that trickles its body
  byte by byte cannot hold a worker for longer.

The package: ``_client`` (the API calls and the contract's rules), ``_transport`` (one HTTP
request and its raw answer), ``_results`` (the typed answers), ``_report`` (the
``textflow.api.*`` event of every call: operation, outcome, seconds); the errors live in the
Django-free leaf ``textflow_django._errors`` and are re-exported here.
"""

from .._breaker import CircuitBreaker
from .._errors import (
    ClientConfigurationError,
    InsufficientBalance,
    InvalidAPIKey,
    TextFlowAPIError,
    TextFlowBadResponse,
    TextFlowCircuitOpen,
    TextFlowConnectionError,
    TextFlowError,
    TextFlowRateLimited,
    TextFlowRejectedNumber,
    TextFlowServerError,
    TextFlowTimeout,
    TextFlowUnavailable,
)
from ._client import DEFAULT_BASE_URL, DEFAULT_TIMEOUT, TextFlowClient, api_key_problem
from ._results import (
    BalanceResult,
    BulkCountResult,
    BulkResult,
    CodeResult,
    SMSResult,
    VerifyResult,
)
from ._transport import CONNECT_RETRIES, MAX_RESPONSE_BYTES, longest_call

__all__ = [
    "CONNECT_RETRIES",
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "MAX_RESPONSE_BYTES",
    "BalanceResult",
    "BulkCountResult",
    "BulkResult",
    "CircuitBreaker",
    "ClientConfigurationError",
    "CodeResult",
    "InsufficientBalance",
    "InvalidAPIKey",
    "SMSResult",
    "TextFlowAPIError",
    "TextFlowBadResponse",
    "TextFlowCircuitOpen",
    "TextFlowClient",
    "TextFlowConnectionError",
    "TextFlowError",
    "TextFlowRateLimited",
    "TextFlowRejectedNumber",
    "TextFlowServerError",
    "TextFlowTimeout",
    "TextFlowUnavailable",
    "VerifyResult",
    "api_key_problem",
    "longest_call",
]
