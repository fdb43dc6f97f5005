"""The read-only admin of phone verifications and bulk SMS jobs, driven through the real
admin site."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from textflow_django import verification
from textflow_django.admin import PhoneVerificationAdmin
from textflow_django.backends import locmem
from textflow_django.exceptions import InvalidCode
from textflow_django.models import PhoneVerification, RateLimitCounter

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
