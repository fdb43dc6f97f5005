"""The read-only admin of phone verifications and bulk SMS jobs, driven through the real
admin site."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from textflow_django import fraud, verification
from textflow_django.admin import (
    FraudAllowedPrefixAdmin,
    FraudBlockAdmin,
    PhoneVerificationAdmin,
)
from textflow_django.backends import locmem
from textflow_django.exceptions import DestinationBlocked, InvalidCode
from textflow_django.models import (
    FraudAllowedPrefix,
    FraudBlock,
    PhoneVerification,
    RateLimitCounter,
)
from textflow_django.ratelimit import get_store

pytestmark = pytest.mark.django_db

NUMBER = "+12025550143"
OTHER = "+447400123456"
CHANGELIST = "admin:textflow_phoneverification_changelist"
Status = PhoneVerification.Status


def textflow(**overrides: Any) -> override_settings:
    return override_settings(TEXTFLOW={**settings.TEXTFLOW, **overrides})


def make(number: str = NUMBER, **fields: Any) -> PhoneVerification:
    fields.setdefault("mode", PhoneVerification.Mode.TEXTFLOW)
    fields.setdefault("expires_at", timezone.now() + dt.timedelta(minutes=10))
    return PhoneVerification.objects.create(phone_number=number, **fields)


@pytest.fixture
def local_row() -> PhoneVerification:
    """A verification made by the service in local mode, so it holds a real code hash."""
    with textflow(VERIFY_MODE="local"):
        row = verification.send_code(NUMBER).verification
    row.refresh_from_db()
    assert row.code_hash and "$" in row.code_hash
    return row


def listed(response: Any) -> list[str]:
    return sorted(row.phone_number for row in response.context["cl"].result_list)


def assert_no_hash(html: str, row: PhoneVerification) -> None:
    salt, _sep, digest = row.code_hash.partition("$")
    assert row.code_hash not in html
    assert digest not in html
    assert salt not in html
    assert "code_hash" not in html


# -- registration --------------------------------------------------------------------------


def test_registered_and_passes_admin_checks() -> None:
    model_admin = admin.site._registry[PhoneVerification]
    assert isinstance(model_admin, PhoneVerificationAdmin)
    assert model_admin.check() == []
    assert RateLimitCounter not in admin.site._registry


def test_code_hash_is_configured_nowhere() -> None:
    model_admin = admin.site._registry[PhoneVerification]
    for option in ("fields", "readonly_fields", "list_display", "search_fields", "list_filter"):
        assert "code_hash" not in (getattr(model_admin, option) or ()), option


# -- pages render and never show the hash ---------------------------------------------------


def test_changelist_renders_without_the_hash(
    admin_client: Client, local_row: PhoneVerification
) -> None:
    response = admin_client.get(reverse(CHANGELIST))

    assert response.status_code == 200
    html = response.content.decode()
    assert NUMBER in html
    assert listed(response) == [NUMBER]
    assert_no_hash(html, local_row)


def test_change_page_is_read_only_and_without_the_hash(
    admin_client: Client, local_row: PhoneVerification
) -> None:
    url = reverse("admin:textflow_phoneverification_change", args=[local_row.pk])
    response = admin_client.get(url)

    assert response.status_code == 200
    html = response.content.decode()
    assert NUMBER in html
    assert_no_hash(html, local_row)
    # Nothing to edit: no input for any field, no save button.
    assert not re.search(
        r'<(input|select|textarea)[^>]+name="(phone_number|status|attempts)"', html
    )
    assert 'name="_save"' not in html

    # Posting anyway changes nothing.
    response = admin_client.post(url, {"status": Status.VERIFIED, "attempts": "0"})
    assert response.status_code == 403
    local_row.refresh_from_db()
    assert local_row.status == Status.PENDING


def test_pages_show_no_digest_of_the_handle_or_the_token(admin_client: Client) -> None:
    """A verification keeps SHA-256s of its client's handle and of its token: the admin
    shows neither (nor their field names)."""
    verification.send_code(NUMBER)
    verification.check_code(NUMBER, locmem.outbox[-1].text.rsplit(" ", 1)[-1])
    row = PhoneVerification.objects.get()
    assert row.status == Status.VERIFIED
    assert len(row.handle_hash) == len(row.token_hash) == 64
    for url in (
        reverse(CHANGELIST),
        reverse("admin:textflow_phoneverification_change", args=[row.pk]),
    ):
        response = admin_client.get(url)
        assert response.status_code == 200
        html = response.content.decode()
        assert NUMBER in html
        for secret_digest in (row.handle_hash, row.token_hash):
            assert secret_digest not in html
        assert "handle_hash" not in html and "token_hash" not in html


def test_add_is_forbidden(admin_client: Client) -> None:
    response = admin_client.get(reverse("admin:textflow_phoneverification_add"))
    assert response.status_code == 403
    response = admin_client.post(
        reverse("admin:textflow_phoneverification_add"),
        {"phone_number": NUMBER, "mode": "textflow", "status": "verified"},
    )
    assert response.status_code == 403
    assert not PhoneVerification.objects.exists()


# -- search and filters ---------------------------------------------------------------------


def test_search_by_phone_number(admin_client: Client) -> None:
    make(NUMBER)
    make(OTHER)
    url = reverse(CHANGELIST)

    assert listed(admin_client.get(url, {"q": "+44"})) == [OTHER]
    assert listed(admin_client.get(url, {"q": "2025550143"})) == [NUMBER]
    # Typed as people write numbers: separators are ignored.
    assert listed(admin_client.get(url, {"q": "+1 (202) 555-0143"})) == [NUMBER]
    assert listed(admin_client.get(url, {"q": "999999"})) == []


def test_filter_by_status_and_mode(admin_client: Client) -> None:
    make(NUMBER, status=Status.LOCKED, attempts=5)
    make(OTHER, status=Status.VERIFIED, mode=PhoneVerification.Mode.LOCAL)
    url = reverse(CHANGELIST)

    assert listed(admin_client.get(url, {"status__exact": "locked"})) == [NUMBER]
    assert listed(admin_client.get(url, {"status__exact": "verified"})) == [OTHER]
    assert listed(admin_client.get(url, {"mode__exact": "local"})) == [OTHER]
    assert listed(admin_client.get(url, {"mode__exact": "textflow"})) == [NUMBER]


# -- the unlock action ----------------------------------------------------------------------


def test_unlock_action_unlocks_only_locked_rows(admin_client: Client) -> None:
    locked = make(NUMBER, status=Status.LOCKED, attempts=5)
    verified = make(OTHER, status=Status.VERIFIED, attempts=2)
    superseded = make(OTHER, status=Status.SUPERSEDED, attempts=5)

    response = admin_client.post(
        reverse(CHANGELIST),
        {"action": "unlock", "_selected_action": [locked.pk, verified.pk, superseded.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert [str(m) for m in response.context["messages"]] == ["1 verification was unlocked."]
    locked.refresh_from_db()
    verified.refresh_from_db()
    superseded.refresh_from_db()
    assert (locked.status, locked.attempts) == (Status.PENDING, 0)
    assert (verified.status, verified.attempts) == (Status.VERIFIED, 2)
    assert (superseded.status, superseded.attempts) == (Status.SUPERSEDED, 5)
    assert LogEntry.objects.filter(object_id=str(locked.pk), action_flag=CHANGE).count() == 1


def test_unlock_lets_the_right_code_through_again(admin_client: Client) -> None:
    verification.send_code(NUMBER)
    # The default "local" mode's SMS ends with the code (locmem records no separate one).
    code = locmem.outbox[-1].text.rsplit(" ", 1)[-1]
    assert re.fullmatch(r"\d{6}", code)
    for _ in range(5):
        with pytest.raises(InvalidCode):
            verification.check_code(NUMBER, "000000" if code != "000000" else "111111")
    row = PhoneVerification.objects.get()
    assert row.status == Status.LOCKED

    admin_client.post(reverse(CHANGELIST), {"action": "unlock", "_selected_action": [row.pk]})

    assert verification.check_code(NUMBER, code).phone_number == NUMBER


def test_unlock_needs_the_change_permission(client: Client) -> None:
    row = make(NUMBER, status=Status.LOCKED, attempts=5)
    viewer = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)  # noqa: S106
    viewer.user_permissions.add(Permission.objects.get(codename="view_phoneverification"))
    client.force_login(viewer)

    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    action_form = response.context["action_form"]  # None when no action is available
    choices = action_form.fields["action"].choices if action_form is not None else []
    assert "unlock" not in [name for name, _label in choices]

    client.post(reverse(CHANGELIST), {"action": "unlock", "_selected_action": [row.pk]})
    row.refresh_from_db()
    assert row.status == Status.LOCKED


# -- delete ---------------------------------------------------------------------------------


def test_only_superusers_delete(admin_client: Client, client: Client) -> None:
    row = make(NUMBER)
    delete_url = reverse("admin:textflow_phoneverification_delete", args=[row.pk])
    staff = get_user_model().objects.create_user("staff", password="pw", is_staff=True)  # noqa: S106
    staff.user_permissions.add(*Permission.objects.filter(codename__endswith="_phoneverification"))
    client.force_login(staff)

    assert client.get(delete_url).status_code == 403
    assert client.post(delete_url, {"post": "yes"}).status_code == 403
    assert PhoneVerification.objects.filter(pk=row.pk).exists()

    assert admin_client.get(delete_url).status_code == 200
    admin_client.post(delete_url, {"post": "yes"})
    assert not PhoneVerification.objects.filter(pk=row.pk).exists()


@pytest.mark.django_db
def test_bulk_jobs_are_listed_read_only_with_progress(admin_client):
    from textflow_django import bulk

    job = bulk.create_job(text="Sale", numbers=["+12025550100", "+12025550101"])
    bulk.run_job(job.pk)
    page = admin_client.get("/admin/textflow/bulksmsjob/")
    assert page.status_code == 200
    assert "100.0%" in page.content.decode()
    detail = admin_client.get(f"/admin/textflow/bulksmsjob/{job.pk}/change/")
    assert detail.status_code == 200 and "Sale" in detail.content.decode()
    assert admin_client.get("/admin/textflow/bulksmsjob/add/").status_code == 403


def _bulk_job(status: str) -> Any:
    from textflow_django import bulk
    from textflow_django.models import BulkSMSJob

    job = bulk.create_job(text="Sale", numbers=["+12025550100", "+12025550101"])
    BulkSMSJob.objects.filter(pk=job.pk).update(status=status)
    return job


@pytest.mark.django_db
def test_a_running_bulk_job_cannot_be_deleted(admin_client):
    from textflow_django.models import BulkRecipient, BulkSMSJob

    job = _bulk_job(BulkSMSJob.Status.RUNNING)
    url = f"/admin/textflow/bulksmsjob/{job.pk}/delete/"
    assert admin_client.get(url).status_code == 403
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert BulkSMSJob.objects.filter(pk=job.pk).exists()
    assert BulkRecipient.objects.filter(job=job).count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["finished", "stopped", "ready"])
def test_a_bulk_job_that_is_not_running_can_be_deleted_with_its_rows(admin_client, status):
    from textflow_django.models import BulkBatch, BulkRecipient, BulkSMSJob

    job = _bulk_job(status)
    response = admin_client.post(f"/admin/textflow/bulksmsjob/{job.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not BulkSMSJob.objects.exists()
    assert not BulkRecipient.objects.exists() and not BulkBatch.objects.exists()


@pytest.mark.django_db
def test_the_delete_confirmation_counts_recipients_instead_of_listing_them(
    admin_client, django_assert_max_num_queries
):
    """A big campaign has a row per recipient: the page says how many, in a few queries,
    whatever the number (Django's default lists every row)."""
    from textflow_django import bulk

    job = bulk.create_job(text="Sale", numbers=[f"+1202555{i:04d}" for i in range(300)])
    bulk.BulkSMSJob.objects.filter(pk=job.pk).update(status="finished")
    with django_assert_max_num_queries(15):
        page = admin_client.get(f"/admin/textflow/bulksmsjob/{job.pk}/delete/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Recipients: 300" in text and "Batches: 1" in text
    assert "+12025550299" not in text  # no row is listed


@pytest.mark.django_db
def test_deleting_a_selection_with_a_running_bulk_job_is_refused(admin_client):
    from textflow_django.models import BulkSMSJob

    running = _bulk_job(BulkSMSJob.Status.RUNNING)
    finished = _bulk_job(BulkSMSJob.Status.FINISHED)
    data = {"action": "delete_selected", "_selected_action": [running.pk, finished.pk]}
    assert admin_client.post("/admin/textflow/bulksmsjob/", data).status_code == 200
    response = admin_client.post("/admin/textflow/bulksmsjob/", {**data, "post": "yes"})
    assert response.status_code == 403
    assert BulkSMSJob.objects.count() == 2
    data["_selected_action"] = [finished.pk]
    response = admin_client.post("/admin/textflow/bulksmsjob/", {**data, "post": "yes"})
    assert response.status_code == 302
    assert list(BulkSMSJob.objects.values_list("pk", flat=True)) == [running.pk]


@pytest.mark.django_db
def test_a_bulk_job_started_after_the_confirmation_is_kept(rf, admin_user):
    from textflow_django.admin import BulkSMSJobAdmin
    from textflow_django.models import BulkSMSJob

    idle = _bulk_job(BulkSMSJob.Status.STOPPED)
    resumed = _bulk_job(BulkSMSJob.Status.STOPPED)
    confirmed = BulkSMSJob.objects.filter(pk__in=[idle.pk, resumed.pk])
    # Between the confirmation page and the deletion, someone resumes one of them.
    BulkSMSJob.objects.filter(pk=resumed.pk).update(status=BulkSMSJob.Status.RUNNING)
    request = rf.post("/")
    request.user = admin_user
    BulkSMSJobAdmin(BulkSMSJob, admin.site).delete_queryset(request, confirmed)
    assert list(BulkSMSJob.objects.values_list("pk", flat=True)) == [resumed.pk]


# -- the Fraud Guard's blocks ---------------------------------------------------------------

BLOCKS = "admin:textflow_fraudblock_changelist"
INSIGHTS = "admin:textflow_fraudblock_insights"
ALLOWED_ADD = "admin:textflow_fraudallowedprefix_add"
PREFIX = "+1202555"  # NUMBER's prefix
REASON = "20 codes sent in 60 min, 0 verified (0%, below 20%)"


def fraud_block(
    value: str = PREFIX, scope: str = "prefix", *, hold: bool = True, **fields: Any
) -> FraudBlock:
    """A block as the guard makes one: its row, and its key held in the rate-limit store."""
    fields.setdefault("until", timezone.now() + dt.timedelta(days=1))
    block = FraudBlock.objects.create(
        scope=scope, value=value, reason=REASON, sends=20, conversions=0, **fields
    )
    if hold:
        get_store().hold(fraud.block_key(scope, value), 86400)
    return block


def sends(number: str = NUMBER) -> bool:
    """Whether a code to ``number`` goes out now (False: the guard refuses the destination)."""
    before = len(locmem.outbox)
    try:
        verification.send_code(number)
    except DestinationBlocked:
        assert len(locmem.outbox) == before
        return False
    assert len(locmem.outbox) == before + 1
    return True


def action_choices(response: Any) -> list[str]:
    action_form = response.context["action_form"]  # None when no action is available
    return [name for name, _label in action_form.fields["action"].choices] if action_form else []


def staff_with(client: Client, *codenames: str) -> Any:
    user = get_user_model().objects.create_user("staff", password="pw", is_staff=True)  # noqa: S106
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return user


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_fraud_admins_are_registered_and_pass_admin_checks() -> None:
    for model, cls in (
        (FraudBlock, FraudBlockAdmin),
        (FraudAllowedPrefix, FraudAllowedPrefixAdmin),
    ):
        model_admin = admin.site._registry[model]
        assert isinstance(model_admin, cls)
        assert model_admin.check() == []


def test_blocks_are_listed_read_only_with_a_link_to_the_insights(admin_client: Client) -> None:
    in_force = fraud_block()
    lifted = fraud_block("+4474001", lifted_at=timezone.now())
    response = admin_client.get(reverse(BLOCKS))
    assert response.status_code == 200
    html = response.content.decode()
    assert PREFIX in html and REASON in html
    assert f'href="{reverse(INSIGHTS)}"' in html
    in_force_column = {b.value: b.in_force_now for b in response.context["cl"].result_list}
    assert in_force_column == {PREFIX: True, "+4474001": False}
    # Nobody adds, edits or deletes a block (a deleted row would leave its key held).
    assert sorted(action_choices(response)) == ["", "allow_prefixes", "lift_blocks"]
    assert admin_client.get(reverse("admin:textflow_fraudblock_add")).status_code == 403
    change = reverse("admin:textflow_fraudblock_change", args=[in_force.pk])
    page = admin_client.get(change)
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert admin_client.post(change, {"until": "2000-01-01"}).status_code == 403
    delete = reverse("admin:textflow_fraudblock_delete", args=[lifted.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert FraudBlock.objects.count() == 2


def test_blocks_filter_by_scope_and_in_force_and_search_by_value(admin_client: Client) -> None:
    fraud_block(hold=False)
    fraud_block("CU", "country", hold=False)
    fraud_block("+4474001", hold=False, until=timezone.now() - dt.timedelta(seconds=1))
    url = reverse(BLOCKS)

    def values(**query: str) -> list[str]:
        return sorted(b.value for b in admin_client.get(url, query).context["cl"].result_list)

    assert values(scope__exact="country") == ["CU"]
    assert values(active="yes") == [PREFIX, "CU"]
    assert values(active="no") == ["+4474001"]
    assert values(q="+1 (202) 555") == [PREFIX]  # typed as people write numbers
    assert values(q="cu") == ["CU"]


def test_lifting_a_block_lets_codes_through_at_once(admin_client: Client) -> None:
    block = fraud_block()
    ended = fraud_block("+4474001", hold=False, lifted_at=timezone.now() - dt.timedelta(hours=1))
    assert not sends()

    response = admin_client.post(
        reverse(BLOCKS),
        {"action": "lift_blocks", "_selected_action": [block.pk, ended.pk]},
        follow=True,
    )

    assert messages_of(response) == [
        "1 block was lifted.",
        "1 selected block had already ended and was left as it is.",
    ]
    block.refresh_from_db()
    assert block.lifted_at is not None
    assert FraudBlock.objects.get(pk=ended.pk).lifted_at == ended.lifted_at
    assert sends()
    assert LogEntry.objects.filter(object_id=str(block.pk), action_flag=CHANGE).count() == 1


def test_lifting_an_ended_block_keeps_a_newer_block_of_its_destination(
    admin_client: Client,
) -> None:
    """The store holds one key per destination: lifting an old, expired block must not free
    the key of the block in force now."""
    old = fraud_block(hold=False, until=timezone.now() - dt.timedelta(days=1))
    fraud_block()
    response = admin_client.post(
        reverse(BLOCKS), {"action": "lift_blocks", "_selected_action": [old.pk]}, follow=True
    )
    assert messages_of(response) == [
        "0 blocks were lifted.",
        "1 selected block had already ended and was left as it is.",
    ]
    assert not sends()


def test_allowing_a_prefix_lifts_it_for_good_and_skips_countries(admin_client: Client) -> None:
    block = fraud_block()
    again = fraud_block(hold=False, lifted_at=timezone.now())  # the same prefix, judged before
    country = fraud_block("CU", "country")
    assert not sends()

    response = admin_client.post(
        reverse(BLOCKS),
        {"action": "allow_prefixes", "_selected_action": [block.pk, again.pk, country.pk]},
        follow=True,
    )

    assert messages_of(response) == [
        f"1 prefix is allowed now, and its blocks were lifted: {PREFIX}.",
        "1 country block was skipped: a country cannot be allowed, only lifted.",
    ]
    allowed = FraudAllowedPrefix.objects.get()
    assert allowed.prefix == PREFIX
    assert allowed.note.startswith("Allowed from the admin by admin after block #")
    block.refresh_from_db()
    country.refresh_from_db()
    assert block.lifted_at is not None and country.lifted_at is None
    assert sends()
    assert LogEntry.objects.filter(object_id=str(allowed.pk), action_flag=ADDITION).count() == 1

    # Allowing it again changes nothing and logs nothing more.
    admin_client.post(reverse(BLOCKS), {"action": "allow_prefixes", "_selected_action": [block.pk]})
    assert FraudAllowedPrefix.objects.count() == 1
    assert LogEntry.objects.filter(action_flag=ADDITION).count() == 1


def test_the_actions_need_their_permissions(client: Client) -> None:
    block = fraud_block()
    staff_with(client, "view_fraudblock")
    response = client.get(reverse(BLOCKS))
    assert response.status_code == 200
    assert action_choices(response) == []
    client.post(reverse(BLOCKS), {"action": "lift_blocks", "_selected_action": [block.pk]})
    block.refresh_from_db()
    assert block.lifted_at is None and not sends()


def test_allowing_needs_the_add_permission_of_allowed_prefixes(client: Client) -> None:
    block = fraud_block()
    user = staff_with(client, "view_fraudblock", "change_fraudblock")
    assert sorted(action_choices(client.get(reverse(BLOCKS)))) == ["", "lift_blocks"]
    client.post(reverse(BLOCKS), {"action": "allow_prefixes", "_selected_action": [block.pk]})
    assert not FraudAllowedPrefix.objects.exists()

    user.user_permissions.add(Permission.objects.get(codename="add_fraudallowedprefix"))
    client.force_login(get_user_model().objects.get(pk=user.pk))  # fresh permission cache
    choices = action_choices(client.get(reverse(BLOCKS)))
    assert sorted(choices) == ["", "allow_prefixes", "lift_blocks"]


# -- allowed prefixes -----------------------------------------------------------------------


def test_adding_an_allowed_prefix_lifts_its_blocks(admin_client: Client) -> None:
    block = fraud_block()
    response = admin_client.post(
        reverse(ALLOWED_ADD), {"prefix": " +1 202 555 ", "note": "our call centre"}
    )
    assert response.status_code == 302
    allowed = FraudAllowedPrefix.objects.get()
    assert (allowed.prefix, allowed.note) == (PREFIX, "our call centre")
    block.refresh_from_db()
    assert block.lifted_at is not None
    assert sends()
    # Its prefix is fixed from then on; its note may change.
    change = reverse("admin:textflow_fraudallowedprefix_change", args=[allowed.pk])
    assert 'name="prefix"' not in admin_client.get(change).content.decode()
    admin_client.post(change, {"note": "the call centre", "prefix": "+44"})
    allowed.refresh_from_db()
    assert (allowed.prefix, allowed.note) == (PREFIX, "the call centre")


@pytest.mark.parametrize(
    ("prefix", "error"),
    [
        ("1202555", "A prefix is + and 1 to 15 digits, such as +1202555."),
        ("+", "A prefix is + and 1 to 15 digits, such as +1202555."),
        ("+1202a55", "A prefix is + and 1 to 15 digits, such as +1202555."),
        ("+١٢٠٢", "A prefix is + and 1 to 15 digits, such as +1202555."),  # Arabic-Indic digits
        ("+1234567890123456", "Ensure this value has at most 16 characters (it has 17)."),
        ("", "This field is required."),
    ],
)
def test_a_bad_allowed_prefix_is_a_form_error(
    admin_client: Client, prefix: str, error: str
) -> None:
    response = admin_client.post(reverse(ALLOWED_ADD), {"prefix": prefix, "note": ""})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["prefix"] == [error]
    assert not FraudAllowedPrefix.objects.exists()


def test_an_allowed_prefix_is_added_once(admin_client: Client) -> None:
    FraudAllowedPrefix.objects.create(prefix=PREFIX)
    response = admin_client.post(reverse(ALLOWED_ADD), {"prefix": "+1 202 555", "note": ""})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["prefix"] == [
        "Allowed prefix with this Prefix already exists."
    ]


def test_allowed_prefixes_are_searched(admin_client: Client) -> None:
    FraudAllowedPrefix.objects.create(prefix=PREFIX, note="call centre")
    FraudAllowedPrefix.objects.create(prefix="+4474001", note="test numbers")
    url = reverse("admin:textflow_fraudallowedprefix_changelist")
    found = admin_client.get(url, {"q": "test"}).context["cl"].result_list
    assert [a.prefix for a in found] == ["+4474001"]


# -- the insights page ----------------------------------------------------------------------


@pytest.fixture
def at_noon(monkeypatch: pytest.MonkeyPatch) -> dt.datetime:
    """The page's clock (``timezone.now``) at a fixed instant, far from any midnight."""
    from .test_insights import NOW

    monkeypatch.setattr(timezone, "now", lambda: NOW)
    return NOW


def test_the_insights_page_is_for_staff_with_the_view_permission(client: Client) -> None:
    url = reverse(INSIGHTS)
    login = reverse("admin:login")
    anonymous = client.get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(login)

    member = get_user_model().objects.create_user("member", password="pw")  # noqa: S106
    client.force_login(member)
    refused = client.get(url)
    assert refused.status_code == 302 and refused["Location"].startswith(login)

    user = staff_with(client)  # staff, no permission
    assert client.get(url).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_fraudblock"))
    client.force_login(get_user_model().objects.get(pk=user.pk))
    assert client.get(url).status_code == 200


def test_the_insights_page_shows_the_figures_and_charts(
    admin_client: Client, at_noon: dt.datetime
) -> None:
    from .test_insights import seed

    seed(at_noon, n=3)
    seed(at_noon, n=1, status=Status.VERIFIED)
    seed(at_noon - dt.timedelta(days=1), OTHER, n=2, status=Status.VERIFIED, country="GB")
    made = fraud_block(hold=False, until=at_noon + dt.timedelta(hours=1))

    response = admin_client.get(reverse(INSIGHTS))

    assert response.status_code == 200
    html = response.content.decode()
    assert '<svg id="tf-daily"' in html
    days = re.findall(r'<g class="tf-day" data-date="([\d-]+)" data-sent="(\d+)"', html)
    assert len(days) == 30
    assert days[-1] == ("2025-03-12", "4") and days[-2] == ("2025-03-11", "2")
    assert re.search(r'<polyline class="tf-line" points="[\d., ]+"', html)
    assert re.search(r'<dd id="tf-total-sent">6</dd>', html)
    assert re.search(r'<dd id="tf-total-verified">3</dd>', html)
    assert re.search(r'<dd id="tf-total-conversion">50.0&nbsp;%</dd>', html)
    countries = re.findall(r'<tr data-country="(\w*)">', html)
    assert countries == ["US", "GB"]
    assert re.findall(r'<tr data-prefix="([^"]+)">', html) == [PREFIX]
    change = reverse("admin:textflow_fraudblock_change", args=[made.pk])
    assert f'<a href="{change}">{PREFIX}</a>' in html

    week = admin_client.get(reverse(INSIGHTS), {"days": "7"}).content.decode()
    assert week.count('<g class="tf-day"') == 7


@pytest.mark.parametrize("days", ["0", "366", "soon"])
def test_a_bad_period_shows_the_default_and_says_so(
    admin_client: Client, at_noon: dt.datetime, days: str
) -> None:
    response = admin_client.get(reverse(INSIGHTS), {"days": days})
    assert response.status_code == 200
    assert response.context["figures"].days == 30
    assert messages_of(response) == ["The period must be 1 to 365 days; showing 30."]


def test_the_chart_coordinates_are_not_localised(
    admin_client: Client, at_noon: dt.datetime, settings: Any
) -> None:
    """SVG wants "12.5" in every locale; German formats numbers as "12,5"."""
    from .test_insights import seed

    settings.LANGUAGE_CODE = "de"
    seed(at_noon, n=3)
    html = admin_client.get(reverse(INSIGHTS), {"days": "7"}).content.decode()
    assert re.search(r'<rect class="tf-sent" x="[\d.]+" y="[\d.]+" width="\d+\.\d+"', html)
    assert not re.search(r'(x|y|cx|cy|width|height)="[^"]*,', html)
    points = re.search(r'<polyline class="tf-line" points="([^"]*)"', html)
    assert points and re.fullmatch(r"[\d.]+,[\d.]+( [\d.]+,[\d.]+)*", points.group(1))


def test_the_insights_page_costs_the_same_queries_whatever_the_traffic(
    admin_client: Client, at_noon: dt.datetime, django_assert_max_num_queries: Any
) -> None:
    """Its figures are grouped by the database: more days, countries, prefixes or blocks
    do not add a query."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from .test_insights import seed

    url = reverse(INSIGHTS)
    admin_client.get(url)  # the session and user, as on any admin page
    with CaptureQueriesContext(connection) as empty:
        admin_client.get(url, {"days": "1"})
    for n in range(30):
        seed(at_noon - dt.timedelta(days=n * 11), f"+1202{n:03d}0000", n=2, country=f"C{n:02d}")
        fraud_block(f"+1{n:03d}", hold=False, until=at_noon + dt.timedelta(hours=1))
    # The session, the user, and the five queries of insights.compute (the fifth reads the
    # daily totals textflow_cleanup keeps: a47415b).
    with django_assert_max_num_queries(7), CaptureQueriesContext(connection) as busy:
        response = admin_client.get(url, {"days": "365"})
    assert response.context["figures"].totals.sent == 60
    assert len(busy) == len(empty)


# -- the opt-out list and SMS replies (issue 17; their actions: tests/test_privacy.py) ---------


def test_opt_out_and_reply_admins_are_registered_and_pass_admin_checks() -> None:
    from textflow_django.admin import OptOutAdmin, SMSReplyAdmin
    from textflow_django.models import OptOut, SMSReply

    for model, cls in ((OptOut, OptOutAdmin), (SMSReply, SMSReplyAdmin)):
        model_admin = admin.site._registry[model]
        assert isinstance(model_admin, cls)
        assert model_admin.check() == []
    # Narrow lists, as the others: what fits a 1280-pixel screen beside the sidebars.
    assert len(admin.site._registry[OptOut].list_display) <= 4
    assert len(admin.site._registry[SMSReply].list_display) <= 4


def test_a_number_typed_in_national_format_is_searched_as_the_site_reads_it(
    admin_client: Client,
) -> None:
    make(NUMBER)
    make(OTHER)
    url = reverse(CHANGELIST)
    with textflow(DEFAULT_REGION="GB"):
        # Before: "07400123456", which no stored number contains.
        assert listed(admin_client.get(url, {"q": "07400 123456"})) == [OTHER]
        assert listed(admin_client.get(url, {"q": "+1 (202) 555-0143"})) == [NUMBER]


def test_replies_are_listed_read_only_searched_and_filtered(admin_client: Client) -> None:
    from textflow_django.models import SMSReply

    stop = SMSReply.objects.create(phone_number=NUMBER, text="STOP", action="opt_out", digest="a")
    long = "Hello, who is this? I got a text from this number yesterday about a sale."
    SMSReply.objects.create(phone_number=OTHER, text=long, digest="b")
    url = reverse("admin:textflow_smsreply_changelist")

    response = admin_client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert long[:39] + "…" in html and long not in html  # cut short in the list
    assert "digest" not in html

    def shown(**query: str) -> list[str]:
        found = admin_client.get(url, query).context["cl"].result_list
        return sorted(row.phone_number for row in found)

    assert shown(q="+1 202 555 0143") == [NUMBER]
    assert shown(q="yesterday") == [OTHER]
    assert shown(action__exact="opt_out") == [NUMBER]
    day = timezone.localtime(stop.received_at)
    assert shown(received_at__year=str(day.year)) == [NUMBER, OTHER]

    change = admin_client.get(reverse("admin:textflow_smsreply_change", args=[stop.pk]))
    assert change.status_code == 200
    assert not re.search(
        r'<(input|select|textarea)[^>]+name="(text|phone_number|action)"', (change.content.decode())
    )
    assert admin_client.get(reverse("admin:textflow_smsreply_add")).status_code == 403


def test_the_opt_out_list_costs_the_same_queries_whatever_its_length(
    admin_client: Client,
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from textflow_django.models import OptOut

    url = reverse("admin:textflow_optout_changelist")
    OptOut.objects.create(phone_number=NUMBER, source="reply")
    admin_client.get(url)
    with CaptureQueriesContext(connection) as one:
        admin_client.get(url)
    OptOut.objects.bulk_create(
        OptOut(phone_number=f"+1202555{n:04d}", source="import") for n in range(50)
    )
    with CaptureQueriesContext(connection) as many:
        admin_client.get(url)
    assert len(many) == len(one)
