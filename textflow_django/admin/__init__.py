"""The admin of textflow-django: one module per subject, every admin class a public name
of ``textflow_django.admin`` (Django's autodiscovery imports this package, which registers
them all).

- Verifications (:mod:`._verifications`) are read-only, with one repair action (unlock). The
  rows are a record of what the verification service did, so nothing is editable here:
  changing a status or an expiry by hand would bypass the service's rules. The keyed hash
  of a local-mode code (``code_hash``) is never shown, searched or filtered on.
- Bulk jobs (:mod:`._bulk`) show their progress; one that is not running may be deleted
  with its rows (:class:`BulkSMSJobAdmin` says why a running one may not).
- Fraud Guard blocks (:mod:`._fraud`) are listed read-only with two actions, lift and allow
  the prefix; the allowed prefixes are added and deleted here; the traffic the guard
  watches is shown on an insights page (:meth:`FraudBlockAdmin.insights_view`, linked from
  the blocks' list).
- The opt-out list (:mod:`._optouts`) is searched, added to, taken from and exported as CSV,
  every change through ``textflow_django.optouts``; SMS replies (:mod:`._replies`) are
  listed read-only.
- Verifications and replies carry the action "Erase all data of these numbers"
  (:mod:`._erasure`: ``textflow_django.privacy``, after a confirmation page).

Every search by number reads the term as the site reads numbers (:mod:`._search`).
Rate-limit counters are deliberately not registered: they are internal, short-lived state.
"""

from __future__ import annotations

from ._bulk import BulkSMSJobAdmin
from ._erasure import ERASE_MAX_NUMBERS, erase_numbers
from ._fraud import FraudAllowedPrefixAdmin, FraudBlockAdmin
from ._optouts import OptOutAdmin
from ._replies import SMSReplyAdmin
from ._verifications import PhoneVerificationAdmin

__all__ = [
    "ERASE_MAX_NUMBERS",
    "BulkSMSJobAdmin",
    "FraudAllowedPrefixAdmin",
    "FraudBlockAdmin",
    "OptOutAdmin",
    "PhoneVerificationAdmin",
    "SMSReplyAdmin",
    "erase_numbers",
]
