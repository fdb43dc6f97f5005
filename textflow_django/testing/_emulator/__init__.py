"""A fake TextFlow server: a real HTTP server on loopback speaking the TextFlow API.

The emulator answers ``/send-sms``, ``/send-code``, ``/verify-code``, ``/bulk-sms``,
``/bulk-count`` and ``/balance`` under ``/api`` the way ``textflow-api.md`` describes, keeps
codes, credits and bulk counts, records every request, and can be told to misbehave
(:meth:`TextFlowEmulator.fault`) or be out of order until told otherwise
(:meth:`TextFlowEmulator.outage`), and forwards a phone's replies to the site's reply URL
as TextFlow does (:meth:`TextFlowEmulator.reply`). Tests, benchmarks and the demo talk to
it over real sockets instead of mocking ``requests``, so connection pooling, timeouts and
resets are exercised for real. Control endpoints under ``/_emulator/...`` inspect and steer
a separately-run one.

It stands for TextFlow, so it imports nothing from Django (or any third-party package) and
nothing of ``textflow_django`` but the ``_e164`` leaf: it runs in a plain pytest session, in a
subprocess (``python -m textflow_django.testing``) and inside benchmarks, and the client's
reading of the contract is tested against an independent one.

One module per job, each importing only those listed after it:

- ``_server``: :class:`TextFlowEmulator`, the object a test holds: lifecycle (socket,
  thread, TLS), clock, request record, fault queue; it wires the others together.
- ``_control``: the ``/_emulator/...`` endpoints (listed in its docstring).
- ``_replies``: a phone's reply POSTed to the site's reply URL, retried until answered 200.
- ``_outage``: :class:`Outage`, the modes of a whole-API outage and their options.
- ``_faults``: :class:`Fault`, checking and queueing faults, acting each kind out.
- ``_http``: the HTTP/1.1 server: connections, threads, framing, writing answers.
- ``_api``: the API's behaviour: routing, the key, the endpoints, credits, codes, bulk
  counts, with TextFlow's own code generator and code SMS text.
- ``_bulk``: bulk recipients delivered at ``bulk_rate`` per second of the emulator's clock.
- ``_countries``: TextFlow's country names.
- ``_responses``: an answer, and TextFlow's error body.
"""

from ._api import SentSMS
from ._faults import Fault
from ._outage import Outage
from ._replies import Reply
from ._server import EMULATOR_API_KEY, RecordedRequest, TextFlowEmulator

__all__ = [
    "EMULATOR_API_KEY",
    "Fault",
    "Outage",
    "RecordedRequest",
    "Reply",
    "SentSMS",
    "TextFlowEmulator",
]
