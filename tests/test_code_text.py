"""The code SMS's wording (``CODE_MESSAGE``, ``WEBOTP_DOMAIN``) and the service's API for
codes another package makes and checks: ``send_code(code=..., text=...)`` and ``confirm``."""

from __future__ import annotations

import pytest
from django.utils import translation

from textflow_django import signals, verification
from textflow_django.exceptions import ResendTooSoon
from textflow_django.models import PhoneVerification
from textflow_django.verification import code_text

from .conftest import tf

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_secrets_in_logs")]

NUMBER = "+12025550143"


@pytest.fixture
def verified():
    """Every ``phone_verified`` signal the test sends, as its keyword arguments."""
    received: list[dict] = []
    signals.phone_verified.connect(
        lambda **kw: received.append(kw), weak=False, dispatch_uid="code-text-verified"
    )
    yield received
    signals.phone_verified.disconnect(dispatch_uid="code-text-verified")


def test_the_default_code_sms_names_the_service(settings):
    tf(settings, SERVICE_NAME="Acme")
    assert code_text("123456") == "Your verification code for Acme is: 123456"
    tf(settings, SERVICE_NAME="")
    assert code_text("123456") == "Your verification code is: 123456"


def test_code_message_is_the_sites_template(settings, sms_outbox):
    tf(settings, SERVICE_NAME="Acme", CODE_MESSAGE="{code} is your {service} code. {{not a field}}")
    verification.send_code(NUMBER)
    [sms] = sms_outbox
    code = sms.text.split(" ", 1)[0]
    assert code.isdigit() and len(code) == 6
    assert sms.text == f"{code} is your Acme code. {{not a field}}"
    assert verification.check_code(NUMBER, code).phone_number == NUMBER


def test_the_webotp_line_is_the_last_line(settings, sms_outbox):
    tf(settings, SERVICE_NAME="Acme", WEBOTP_DOMAIN="www.example.com")
    verification.send_code(NUMBER)
    [sms] = sms_outbox
    body, blank, last = sms.text.rsplit("\n", 2)
    code = body.rsplit(" ", 1)[-1]
    assert body == f"Your verification code for Acme is: {code}"
    assert blank == ""
    assert last == f"@www.example.com #{code}"


def test_the_code_sms_is_written_in_the_active_language(settings):
    tf(settings, SERVICE_NAME="Acme")
    with translation.override("es"):
        spanish = code_text("123456")
    assert spanish == "La clave para confirmar su teléfono en Acme es: 123456"
    assert code_text("123456") == "Your verification code for Acme is: 123456"  # outside


def test_a_callers_code_is_sent_and_kept_as_a_hash_whatever_the_mode(settings, sms_outbox):
    tf(settings, VERIFY_MODE="textflow", SERVICE_NAME="Acme")
    sent = verification.send_code(NUMBER, code="8675309")
    [sms] = sms_outbox
    assert sms.text == "Your verification code for Acme is: 8675309"
    row = PhoneVerification.objects.get()
    assert row.mode == PhoneVerification.Mode.LOCAL
    assert row.code_hash and "8675309" not in row.code_hash
    assert sent.verification == row


def test_a_callers_text_is_sent_as_it_is_under_the_same_limits(settings, sms_outbox):
    tf(settings, RESEND_COOLDOWN=30)
    verification.send_code(NUMBER, text="An account with this number already exists.")
    assert [m.text for m in sms_outbox] == ["An account with this number already exists."]
    row = PhoneVerification.objects.get()
    assert row.code_hash == ""  # no code: nothing can ever verify it
    with pytest.raises(ResendTooSoon):
        verification.send_code(NUMBER, text="again")
    with pytest.raises(ResendTooSoon):
        verification.send_code(NUMBER)  # the cooldown is the number's, whatever was sent
    assert len(sms_outbox) == 1


def test_confirm_verifies_the_newest_pending_code_once(settings, sms_outbox, verified):
    tf(settings, RESEND_COOLDOWN=0)
    verification.send_code(NUMBER, code="111111")
    newest = verification.send_code(NUMBER, code="222222", text="your code: 222222")
    assert [m.text for m in sms_outbox][-1] == "your code: 222222"
    done = verification.confirm(NUMBER)
    assert done is not None and done.phone_number == NUMBER and done.token
    row = PhoneVerification.objects.get(pk=newest.verification.pk)
    assert row.status == PhoneVerification.Status.VERIFIED
    assert row.attempts == 0  # confirm takes no attempt and gives none back
    assert row.verified_at is not None
    assert [kw["phone_number"] for kw in verified] == [NUMBER]
    assert verified[0]["token"] == done.token
    # The token proves the number once, as after check_code.
    assert verification.consume_token(done.token) == NUMBER
    # Nothing pending any more: the older code was superseded by the newer send.
    assert verification.confirm(NUMBER) is None
    assert len(verified) == 1


def test_confirm_without_a_pending_code_changes_nothing(sms_outbox, verified):
    assert verification.confirm(NUMBER) is None
    assert verified == []
    assert not PhoneVerification.objects.exists()


def test_confirm_never_verifies_a_code_sent_for_someone_else(settings, sms_outbox, verified):
    from django.contrib.auth import get_user_model

    tf(settings, RESEND_COOLDOWN=0)
    User = get_user_model()
    owner, stranger = User.objects.create(username="owner"), User.objects.create(username="x")
    mine = verification.send_code(NUMBER, code="111111", user=owner)
    # The owner's success confirms no code sent for another user, nor one with no user.
    verification.send_code(NUMBER, code="222222", user=stranger, session=False)
    assert verification.confirm(NUMBER, user=owner) is None
    assert verification.confirm(NUMBER) is None
    theirs = PhoneVerification.objects.exclude(pk=mine.verification.pk).get()
    assert theirs.status == PhoneVerification.Status.PENDING
    assert verified == []
    # The stranger's own success confirms the stranger's code.
    confirmed = verification.confirm(NUMBER, user=stranger)
    assert confirmed is not None and confirmed.verification == theirs
    # An SMS that carried no code is never confirmed.
    verification.send_code(NUMBER, text="An account with this number already exists.")
    assert verification.confirm(NUMBER) is None
