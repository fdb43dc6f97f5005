"""Models: phone verifications, the database store of rate-limit counters, and bulk SMS jobs
(``BulkSMSJob``, with a ``BulkRecipient`` row per distinct number and a ``BulkBatch`` row per
``/bulk-sms`` call).

A ``PhoneVerification`` never holds a code in clear. In ``"local"`` mode it keeps a keyed hash
of the code (``code_hash``); in ``"textflow"`` mode TextFlow holds the code and the row keeps
nothing of it at all. The client's handle and the token it gets on success are kept as
SHA-256 hashes only (they are random 192-bit secrets: no salt or key is needed).
"""

from __future__ import annotations

import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from .fields import PhoneNumberField

__all__ = [
    "BulkBatch",
    "BulkRecipient",
    "BulkSMSJob",
    "FraudAllowedPrefix",
    "FraudBlock",
    "OptOut",
    "PhoneVerification",
    "RateLimitCounter",
    "SMSReply",
    "VerificationDay",
]


class PhoneVerification(models.Model):
    """One code sent to one number, and what became of it."""

    class Status(models.TextChoices):
        PENDING = "pending", _("pending")
        # A context of its own: "verified" said of a verification, not of a count of codes
        # (the admin's and the insights' columns), which languages inflect differently.
        VERIFIED = "verified", pgettext_lazy("phone verification", "verified")
        LOCKED = "locked", _("locked (too many wrong codes)")
        SUPERSEDED = "superseded", _("superseded by a newer code")

    class Mode(models.TextChoices):
        TEXTFLOW = "textflow", _("TextFlow holds the code")
        LOCAL = "local", _("this site holds a hash of the code")

    # Indexed by the (phone_number, status) index below, which serves lookups by number too.
    phone_number = PhoneNumberField(_("phone number"))
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PENDING
    )
    mode = models.CharField(_("mode"), max_length=16, choices=Mode.choices)
    attempts = models.PositiveIntegerField(_("wrong codes"), default=0)
    #: Keyed hash of the code in "local" mode ("" in "textflow" mode). Never the code itself.
    code_hash = models.CharField(max_length=128, blank=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="phone_verifications",
    )
    client_ip = models.GenericIPAddressField(_("client IP"), null=True, blank=True)
    #: The number's ISO 3166-1 region (``"US"``): the Fraud Guard judges and the insights
    #: page counts by country ("" on rows older than the field).
    country = models.CharField(_("country"), max_length=3, blank=True, default="")
    #: SHA-256 of the opaque ``verification_id`` the client that asked for the code holds
    #: (only that client's guesses reach this verification); "" for a site's own call.
    handle_hash = models.CharField(max_length=64, blank=True, editable=False)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    expires_at = models.DateTimeField(_("expires"))
    verified_at = models.DateTimeField(
        pgettext_lazy("phone verification", "verified"), null=True, blank=True
    )
    #: SHA-256 of the token handed out on success (the token itself is never stored).
    token_hash = models.CharField(max_length=64, blank=True, editable=False)
    #: When the token was consumed (a token proves a number once).
    token_used_at = models.DateTimeField(_("token used"), null=True, blank=True)
    #: SHA-256 of the session that verified, when ``TOKEN_SESSION_BINDING`` binds the token.
    token_session = models.CharField(max_length=64, blank=True, editable=False)

    class Meta:
        verbose_name = _("phone verification")
        verbose_name_plural = _("phone verifications")
        ordering = ["-created_at", "-id"]
        indexes = [
            # Also serves the lookup by handle: a number has a handful of live rows, and a
            # handle is only ever looked up with its number (an index of random digests
            # would cost every send a write at a random place, for nothing).
            models.Index(fields=["phone_number", "status"], name="textflow_pv_number_status"),
            # The Fraud Guard's judgement of a country, and the insights page's figures by
            # day and country (appended to in time order: cheap to keep up).
            models.Index(fields=["country", "created_at"], name="textflow_pv_country_created"),
            # The insights page's period and textflow_cleanup's oldest day read a range of
            # created_at across every country, and the admin lists newest first: without it
            # each is a scan of the whole table.
            models.Index(fields=["created_at"], name="textflow_pv_created"),
        ]
        constraints = [
            # Unique among the tokens handed out (and the index a consume looks them up by).
            models.UniqueConstraint(
                fields=["token_hash"],
                condition=~models.Q(token_hash=""),
                name="textflow_pv_token_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.phone_number} ({self.get_status_display()})"


class RateLimitCounter(models.Model):
    """A counter of the database rate-limit store (``TEXTFLOW["RATELIMIT_STORE"] = "database"``).

    A claim is the row ``<key>``, a count the row ``<key>:<window>:<index>``; expired rows are
    purged now and then as new ones are written (``DatabaseStore.purge_one_in``).
    """

    key = models.CharField(max_length=200)
    count = models.PositiveIntegerField(default=0)
    #: Indexed for the purge of expired rows.
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = _("rate-limit counter")
        verbose_name_plural = _("rate-limit counters")
        constraints = [
            # A constraint, not ``unique=True``: on PostgreSQL that also makes a second
            # (pattern-matching) index, which no query here uses and every new row would
            # pay for: a send writes about ten rows.
            models.UniqueConstraint(fields=["key"], name="textflow_counter_key_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.key}={self.count}"


class FraudBlock(models.Model):
    """A destination the Fraud Guard stopped sending codes to: a number prefix (``+1202555``)
    or a whole country (``CU``), with the figures it judged on. Active while ``until`` is
    ahead and it was not lifted; the rate-limit store holds the same block for the send path
    (``textflow_django.fraud``), this row is its record for people (the admin, alerts)."""

    class Scope(models.TextChoices):
        PREFIX = "prefix", _("number prefix")
        COUNTRY = "country", _("country")

    scope = models.CharField(_("scope"), max_length=16, choices=Scope.choices)
    #: The prefix (``+`` and digits) or the ISO region.
    value = models.CharField(_("destination"), max_length=16)
    reason = models.CharField(_("reason"), max_length=200)
    #: Codes sent to the destination in the judged window, and how many of them were verified.
    sends = models.PositiveIntegerField(_("codes judged"), default=0)
    conversions = models.PositiveIntegerField(_("codes verified"), default=0)
    created_at = models.DateTimeField(_("since"), auto_now_add=True)
    until = models.DateTimeField(_("until"))
    lifted_at = models.DateTimeField(_("lifted"), null=True, blank=True)

    class Meta:
        verbose_name = _("fraud block")
        verbose_name_plural = _("fraud blocks")
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["scope", "value"], name="textflow_block_destination")]

    def __str__(self) -> str:
        return f"{self.value} ({self.get_scope_display()})"

    @staticmethod
    def in_force(now: datetime.datetime) -> models.Q:
        """The blocks in force at ``now``: not lifted, and ``until`` still ahead."""
        return models.Q(lifted_at=None, until__gt=now)


class FraudAllowedPrefix(models.Model):
    """A number prefix the Fraud Guard never blocks nor slows (beside ``ALLOW_PREFIXES``):
    added from the admin, by hand or from a block judged wrong."""

    prefix = models.CharField(_("prefix"), max_length=16, unique=True)
    note = models.CharField(_("note"), max_length=200, blank=True)
    created_at = models.DateTimeField(_("added"), auto_now_add=True)

    class Meta:
        verbose_name = _("allowed prefix")
        verbose_name_plural = _("allowed prefixes")
        ordering = ["prefix"]

    def __str__(self) -> str:
        return self.prefix


class BulkSMSJob(models.Model):
    """One text sent to many numbers, with its progress committed after every batch."""

    class Status(models.TextChoices):
        PREPARING = "preparing", _("preparing")
        READY = "ready", _("ready to send")
        RUNNING = "running", _("sending")
        STOPPED = "stopped", _("stopped (resumable)")
        FINISHED = "finished", _("finished")

    text = models.TextField(_("text"))
    source = models.CharField(_("source"), max_length=500, blank=True)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PREPARING
    )
    batch_size = models.PositiveIntegerField(_("batch size"))
    #: Distinct valid recipients.
    total = models.PositiveIntegerField(_("recipients"), default=0)
    invalid = models.PositiveIntegerField(_("invalid numbers skipped"), default=0)
    duplicates = models.PositiveIntegerField(_("duplicates skipped"), default=0)
    #: Numbers left out for being on the opt-out list: when the job was made, or later,
    #: when their batch was sent (they are then no longer in ``total``).
    opted_out = models.PositiveIntegerField(_("opted-out numbers left out"), default=0)
    #: Recipients in batches TextFlow accepted.
    sent = models.PositiveIntegerField(_("recipients sent"), default=0)
    #: Recipients in batches whose fate is unknown (sent, then no answer).
    uncertain = models.PositiveIntegerField(_("recipients uncertain"), default=0)
    batches_total = models.PositiveIntegerField(_("batches"), default=0)
    batches_sent = models.PositiveIntegerField(_("batches sent"), default=0)
    #: The first offending values or line numbers of invalid input, for the report.
    invalid_samples = models.JSONField(_("invalid samples"), default=list, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)

    class Meta:
        verbose_name = _("bulk SMS job")
        verbose_name_plural = _("bulk SMS jobs")
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.get_status_display()} ({self.sent}/{self.total})"

    @property
    def progress(self) -> float:
        """Share of recipients accepted by TextFlow, 0.0 to 1.0."""
        return self.sent / self.total if self.total else (1.0 if self.finished_at else 0.0)


class BulkRecipient(models.Model):
    """One distinct number of a job; the unique constraint is the deduplication."""

    job = models.ForeignKey(BulkSMSJob, on_delete=models.CASCADE, related_name="+")
    phone_number = models.CharField(max_length=16)
    batch = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "phone_number"], name="textflow_bulk_unique")
        ]
        indexes = [models.Index(fields=["job", "batch"], name="textflow_bulk_job_batch")]

    def __str__(self) -> str:
        return f"job {self.job_id}: {self.phone_number}"


class BulkBatch(models.Model):
    """One ``/bulk-sms`` call of a job and what became of it.

    ``sending`` is claimed-and-in-flight, by ``claimed_by`` since ``claimed_at``. A resume
    leaves a batch claimed less than ``BULK_LEASE`` seconds ago to its sender, which may be
    sending it right now; one claimed longer ago belongs to a process that died after
    (maybe) sending it (a live sender stamps its claim before every call to TextFlow, one
    call lasting at most about ``TIMEOUT``, and the lease is longer: check E020), so it
    becomes ``uncertain``, never re-sent unless the operator asks.
    """

    class Status(models.TextChoices):
        PENDING = "pending", _("pending")
        SENDING = "sending", _("sending")
        ACCEPTED = "accepted", _("accepted by TextFlow")
        UNCERTAIN = "uncertain", _("uncertain (maybe sent)")

    job = models.ForeignKey(BulkSMSJob, on_delete=models.CASCADE, related_name="batches")
    index = models.PositiveIntegerField()
    size = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    sent_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    # Who took the batch for sending and when: a resume leaves a claim younger than the lease
    # (``BULK_LEASE``) to its live sender and treats an older one as its sender's death.
    claimed_at = models.DateTimeField(_("claimed"), null=True, blank=True)
    claimed_by = models.CharField(_("claimed by"), max_length=200, blank=True)

    class Meta:
        ordering = ["job", "index"]
        constraints = [
            models.UniqueConstraint(fields=["job", "index"], name="textflow_bulk_batch_unique")
        ]
        indexes = [models.Index(fields=["job", "status"], name="textflow_batch_job_status")]

    def __str__(self) -> str:
        return f"job {self.job_id} batch {self.index} ({self.status})"


class VerificationDay(models.Model):
    """A day's codes sent and verified for one country, kept when ``textflow_cleanup``
    deletes that day's ``PhoneVerification`` rows, so the insights outlive the rows.

    ``day`` is the calendar day in the site's time zone the codes were sent on (the insights'
    day); ``country`` is ``""`` for rows that had none. A day that has rows here is read from
    here only: its remaining rows, if a cleanup was interrupted, are not counted twice.
    """

    day = models.DateField(_("day"))
    country = models.CharField(_("country"), max_length=3, blank=True, default="")
    sent = models.PositiveBigIntegerField(_("codes sent"), default=0)
    verified = models.PositiveBigIntegerField(_("codes verified"), default=0)

    class Meta:
        verbose_name = _("daily verification total")
        verbose_name_plural = _("daily verification totals")
        ordering = ["-day", "country"]
        constraints = [
            models.UniqueConstraint(fields=["day", "country"], name="textflow_day_country_unique")
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.country or '-'}: {self.verified}/{self.sent}"


class OptOut(models.Model):
    """A number that asked not to be texted: bulk jobs leave it out, and a backend refuses a
    non-transactional send to it. One row per number (E.164)."""

    class Source(models.TextChoices):
        REPLY = "reply", _("replied with an opt-out keyword")
        ADMIN = "admin", _("added in the admin")
        IMPORT = "import", _("imported")
        API = "api", _("added from Python code")

    phone_number = PhoneNumberField(_("phone number"), unique=True)
    source = models.CharField(_("source"), max_length=16, choices=Source.choices)
    created_at = models.DateTimeField(_("since"), default=timezone.now)
    note = models.CharField(_("note"), max_length=200, blank=True)

    class Meta:
        verbose_name = _("opt-out")
        verbose_name_plural = _("opt-outs")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return str(self.phone_number)


class SMSReply(models.Model):
    """An SMS a person sent to the site's TextFlow number, as TextFlow forwarded it.

    ``digest`` identifies a delivery (number and text), so a delivery TextFlow retries is
    stored once; ``action`` says what the reply did to the opt-out list, if anything.
    """

    class Action(models.TextChoices):
        NONE = "", _("none")
        OPT_OUT = "opt_out", _("opted out")
        OPT_IN = "opt_in", _("opted back in")

    phone_number = PhoneNumberField(_("phone number"), db_index=True)
    text = models.TextField(_("text"))
    received_at = models.DateTimeField(_("received"), default=timezone.now, db_index=True)
    action = models.CharField(
        _("action"), max_length=16, choices=Action.choices, default=Action.NONE, blank=True
    )
    digest = models.CharField(max_length=64, db_index=True, editable=False)

    class Meta:
        verbose_name = _("SMS reply")
        verbose_name_plural = _("SMS replies")
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.phone_number}: {self.text[:40]}"
