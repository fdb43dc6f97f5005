"""textflow_django.contrib.two_factor with the real django-two-factor-auth, through Django's
test client: the setup wizard adds an SMS device, the token arrives (locmem outbox, or the
emulator over HTTP), the login takes it; refusals are messages on two-factor's pages, not
server errors; make_call raises; the system checks fire."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages.storage.cookie import CookieStorage
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory
from django.urls import reverse
from django.utils.module_loading import import_string
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_static.models import StaticDevice
from two_factor.middleware import threadlocals
from two_factor.plugins.phonenumber.models import PhoneDevice
from two_factor.signals import user_verified

import textflow_django.checks
import textflow_django.contrib.two_factor.checks as two_factor_checks
from textflow_django.backends._emulated import SMSMessage
from textflow_django.contrib.two_factor import TextFlowGateway, VoiceCallsUnsupported
from textflow_django.contrib.two_factor.checks import check_two_factor
from textflow_django.exceptions import (
    CountryNotAllowed,
    TextFlowConfigurationError,
)
from textflow_django.models import PhoneVerification

from .conftest import tf

pytestmark = pytest.mark.django_db

GATEWAY = "textflow_django.contrib.two_factor.TextFlowGateway"
NUMBER = "+12025550143"
PASSWORD = "correct horse battery staple"
TEMPLATES_DIR = Path(__file__).resolve().parent / "two_factor_templates"
THREAD_LOCALS = "two_factor.middleware.threadlocals.ThreadLocals"


def _site_middleware(base: list[str]) -> list[str]:
    """A project's middleware for two-factor, as the README lists it: django-otp's after
    authentication, two-factor's ThreadLocals (the suite's has MessageMiddleware)."""
    after = base.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1
    return [*base[:after], "django_otp.middleware.OTPMiddleware", *base[after:], THREAD_LOCALS]


SETUP = "/account/two_factor/setup/"
LOGIN = "/account/login/"


def _forget_request() -> None:
    """two-factor's ThreadLocals keeps the last request of the thread after it ends."""
    threadlocals._thread_locals.__dict__.pop("request", None)


@pytest.fixture
def outbox(settings: Any, sms_outbox: list[SMSMessage]) -> Iterator[list[SMSMessage]]:
    """A site with two-factor's URLs, TextFlow's gateway, and a base template for two-factor's
    pages that shows Django's messages (as a project's does); SMS in the locmem outbox."""
    settings.ROOT_URLCONF = "tests.two_factor_urls"
    settings.LOGIN_URL = "two_factor:login"
    settings.MIDDLEWARE = _site_middleware(settings.MIDDLEWARE)
    settings.TWO_FACTOR_SMS_GATEWAY = GATEWAY
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [TEMPLATES_DIR]}]
    _forget_request()
    yield sms_outbox
    _forget_request()


@pytest.fixture
def user() -> Any:
    return get_user_model().objects.create_user("ada", password=PASSWORD)


def _device(user: Any, number: str = NUMBER, method: str = "sms") -> Any:
    return PhoneDevice.objects.create(user=user, name="default", number=number, method=method)


def _token(message: Any) -> str:
    """The token at the end of a two-factor SMS."""
    found = re.search(r"(\d{6})$", message.text)
    assert found, "no token in the SMS"
    return found[1]


def _log_in(client: Any) -> Any:
    return client.post(
        LOGIN,
        {"login_view-current_step": "auth", "auth-username": "ada", "auth-password": PASSWORD},
    )


def _enter_token(client: Any, token: str) -> Any:
    return client.post(LOGIN, {"login_view-current_step": "token", "token-otp_token": token})


def _statuses() -> list[str]:
    return list(
        PhoneVerification.objects.filter(phone_number=NUMBER)
        .order_by("id")
        .values_list("status", flat=True)
    )


VERIFIED = PhoneVerification.Status.VERIFIED


def test_a_user_adds_an_sms_device_receives_the_token_and_logs_in_with_it(
    client: Any, outbox: list[SMSMessage], user: Any, settings: Any
) -> None:
    # The cooldown would refuse the login's SMS moments after the setup's (its own test).
    tf(settings, RESEND_COOLDOWN=0)
    client.force_login(user)
    assert client.get(SETUP).status_code == 200
    client.post(SETUP, {"setup_view-current_step": "welcome"})
    client.post(SETUP, {"setup_view-current_step": "method", "method-method": "sms"})
    page = client.post(SETUP, {"setup_view-current_step": "sms", "sms-number": NUMBER})
    assert page.status_code == 200
    assert page.context["wizard"]["steps"].current == "validation"
    [sms] = outbox
    assert sms.phone_number == NUMBER
    assert sms.text == f"Your login code for Tests is: {_token(sms)}"
    done = client.post(
        SETUP, {"setup_view-current_step": "validation", "validation-token": _token(sms)}
    )
    assert done.status_code == 302
    assert done["Location"] == reverse("two_factor:setup_complete")
    device = PhoneDevice.objects.get(user=user)
    assert (device.number, device.method, device.confirmed) == (NUMBER, "sms", True)
    # The setup's code was used: the Fraud Guard counts it.
    assert _statuses() == [VERIFIED]

    client.logout()
    page = _log_in(client)
    assert page.status_code == 200
    assert page.context["wizard"]["steps"].current == "token"
    assert len(outbox) == 2
    assert outbox[1].phone_number == NUMBER
    logged_in = _enter_token(client, _token(outbox[1]))
    assert logged_in.status_code == 302
    assert logged_in["Location"] == settings.LOGIN_REDIRECT_URL
    assert int(client.session["_auth_user_id"]) == user.pk
    assert client.session[DEVICE_ID_SESSION_KEY] == device.persistent_id
    assert _statuses() == [VERIFIED, VERIFIED]


def test_the_token_reaches_the_phone_throughtf(
    client: Any,
    outbox: list[SMSMessage],
    textflow_live: Any,
    user: Any,
    no_secrets_in_logs: set[str],
) -> None:
    """Over HTTP, to the emulator; no token in the logs."""
    _device(user)
    assert _log_in(client).status_code == 200
    [sms] = textflow_live.messages
    assert (sms.phone_number, sms.kind) == (NUMBER, "sms")
    assert outbox == []
    assert _enter_token(client, _token(sms)).status_code == 302
    assert int(client.session["_auth_user_id"]) == user.pk
    assert _statuses() == [VERIFIED]


def test_a_wrong_token_logs_nobody_in_and_sends_no_other_sms(
    client: Any, outbox: list[SMSMessage], user: Any
) -> None:
    _device(user)
    _log_in(client)
    wrong = f"{(int(_token(outbox[0])) + 1) % 1_000_000:06d}"
    page = _enter_token(client, wrong)
    assert page.status_code == 200
    assert "_auth_user_id" not in client.session
    assert len(outbox) == 1
    assert _statuses() == [PhoneVerification.Status.PENDING]


def test_a_capped_number_is_told_so_on_the_token_page_not_a_server_error(
    client: Any, outbox: list[SMSMessage], user: Any, settings: Any
) -> None:
    tf(settings, RESEND_COOLDOWN=0, SEND_LIMITS={"number": ("1/h",)})
    _device(user)
    StaticDevice.objects.create(user=user, name="backup").token_set.create(token="backup42")
    _log_in(client)
    assert len(outbox) == 1

    page = _log_in(client)  # again: past the number's cap
    assert page.status_code == 200
    assert len(outbox) == 1
    assert "Too many requests. Try again later." in page.content.decode()
    # The page still offers the way in that needs no SMS.
    assert page.context["wizard"]["steps"].current == "token"
    assert page.context["backup_tokens"] == 1


def test_the_cooldown_holds_for_a_login_moments_after_another_sms(
    client: Any, outbox: list[SMSMessage], user: Any
) -> None:
    device = _device(user)
    TextFlowGateway().send_sms(device, "123456")  # as the setup wizard's SMS, moments ago
    page = _log_in(client)
    assert len(outbox) == 1
    assert "A code was sent a moment ago." in page.content.decode()


def test_a_number_of_a_refused_country_is_told_so_in_the_setup_wizard(
    client: Any, outbox: list[SMSMessage], user: Any, settings: Any
) -> None:
    tf(settings, BLOCKED_COUNTRIES=["GB"])
    client.force_login(user)
    client.get(SETUP)
    client.post(SETUP, {"setup_view-current_step": "welcome"})
    client.post(SETUP, {"setup_view-current_step": "method", "method-method": "sms"})
    page = client.post(SETUP, {"setup_view-current_step": "sms", "sms-number": "+442071838750"})
    assert page.status_code == 200
    assert outbox == []
    assert "Phone numbers from this country are not accepted." in page.content.decode()
    assert not PhoneDevice.objects.exists()


def test_without_a_request_a_refusal_is_raised(
    outbox: list[SMSMessage], user: Any, settings: Any
) -> None:
    """No ThreadLocals (or outside a request): nobody to tell, so the caller gets it."""
    tf(settings, BLOCKED_COUNTRIES=["US"])
    with pytest.raises(CountryNotAllowed):
        TextFlowGateway().send_sms(_device(user), "123456")
    assert outbox == []


def test_without_messages_a_refusal_is_raised(
    outbox: list[SMSMessage], user: Any, settings: Any, rf: RequestFactory
) -> None:
    """A request with no MessageMiddleware cannot be told: the refusal is raised."""
    tf(settings, BLOCKED_COUNTRIES=["US"])
    threadlocals._thread_locals.request = rf.get("/")
    with pytest.raises(CountryNotAllowed):
        TextFlowGateway().send_sms(_device(user), "123456")


def test_a_number_our_parser_refuses_is_told_too(
    outbox: list[SMSMessage], user: Any, rf: RequestFactory
) -> None:
    """Two-factor accepted it; ``send_code`` does not (an InvalidPhoneNumberError)."""
    request = rf.get("/")
    request._messages = CookieStorage(request)  # what MessageMiddleware gives a request
    threadlocals._thread_locals.request = request
    TextFlowGateway().send_sms(PhoneDevice(user=user, number="+1202555", method="sms"), "123456")
    [told] = [str(message) for message in request._messages]
    assert told == "Enter a valid phone number."  # the refusal's text, never the token
    assert outbox == []


def test_outside_a_request_the_sms_is_sent_for_the_devices_user(
    outbox: list[SMSMessage], user: Any
) -> None:
    TextFlowGateway().send_sms(_device(user), "012345")
    [sms] = outbox
    assert sms.text.endswith(": 012345")
    assert PhoneVerification.objects.get().user == user


def test_the_sms_wording_is_the_gateways_and_carries_the_webotp_line(
    outbox: list[SMSMessage], user: Any, settings: Any
) -> None:
    tf(settings, WEBOTP_DOMAIN="example.com", SERVICE_NAME="", RESEND_COOLDOWN=0)

    class Custom(TextFlowGateway):
        sms_template = "{code} is your {service}code"

    TextFlowGateway().send_sms(_device(user), "123456")
    assert outbox[0].text == "Your login code is: 123456\n\n@example.com #123456"
    Custom().send_sms(_device(user), "654321")
    assert outbox[1].text == "654321 is your code\n\n@example.com #654321"


def test_make_call_raises_a_configuration_error(
    outbox: list[SMSMessage], user: Any, settings: Any
) -> None:
    settings.TWO_FACTOR_CALL_GATEWAY = GATEWAY
    device = _device(user, method="call")
    with pytest.raises(VoiceCallsUnsupported, match="TextFlow sends SMS only"):
        device.generate_challenge()  # two-factor's own path to the gateway
    assert issubclass(VoiceCallsUnsupported, ImproperlyConfigured)
    assert outbox == []


def test_the_gateway_refuses_to_send_without_its_app(
    outbox: list[SMSMessage], user: Any, settings: Any
) -> None:
    """Without the app no token is ever confirmed, and the Fraud Guard would count every
    two-factor SMS as unused."""
    device = _device(user)
    settings.INSTALLED_APPS = [
        app for app in settings.INSTALLED_APPS if app != "textflow_django.contrib.two_factor"
    ]
    with pytest.raises(TextFlowConfigurationError, match="INSTALLED_APPS"):
        TextFlowGateway().send_sms(device, "123456")
    assert outbox == []


def test_the_short_path_and_the_module_path_name_one_class() -> None:
    assert import_string(GATEWAY) is TextFlowGateway
    assert import_string("textflow_django.contrib.two_factor.gateway.TextFlowGateway") is (
        TextFlowGateway
    )
    with pytest.raises(ImportError, match="Nope"):
        import_string("textflow_django.contrib.two_factor.Nope")


def test_a_login_confirms_nothing_it_cannot_and_still_succeeds(
    outbox: list[SMSMessage], user: Any, settings: Any, rf: RequestFactory, caplog: Any
) -> None:
    """A number ``confirm`` refuses (its country is no longer accepted) is logged, not
    raised: two-factor accepted the token."""
    device = _device(user)
    TextFlowGateway().send_sms(device, "123456")
    tf(settings, BLOCKED_COUNTRIES=["US"])
    user_verified.send(sender=__name__, request=rf.get("/"), user=user, device=device)
    assert _statuses() == [PhoneVerification.Status.PENDING]
    assert "textflow.two_factor.confirm_failed device=" in caplog.text
    assert "reason=country_not_allowed" in caplog.text
    assert "123456" not in caplog.text


def test_a_device_someone_else_creates_confirms_no_code(
    outbox: list[SMSMessage], user: Any, rf: RequestFactory
) -> None:
    """Staff adding a phone in the admin entered no token."""
    TextFlowGateway().send_sms(PhoneDevice(user=user, number=NUMBER, method="sms"), "123456")
    staff = get_user_model().objects.create_user("staff", is_staff=True)
    request = rf.post("/admin/")
    request.user = staff
    threadlocals._thread_locals.request = request
    _device(user)
    assert _statuses() == [PhoneVerification.Status.PENDING]
    request.user = user  # the owner, in the setup wizard
    PhoneDevice.objects.all().delete()
    _device(user)
    assert _statuses() == [VERIFIED]


def test_a_call_device_or_another_sender_confirms_nothing(
    outbox: list[SMSMessage], user: Any, rf: RequestFactory
) -> None:
    TextFlowGateway().send_sms(PhoneDevice(user=user, number=NUMBER, method="sms"), "123456")
    call = _device(user, method="call")
    user_verified.send(sender=__name__, request=rf.get("/"), user=user, device=call)
    user_verified.send(sender=__name__, request=rf.get("/"), user=user, device=None)
    assert _statuses() == [PhoneVerification.Status.PENDING]


# -- system checks ------------------------------------------------------------------------


def _ids() -> list[str]:
    return [message.id or "" for message in check_two_factor()]


@pytest.fixture
def configured(settings: Any) -> Any:
    settings.MIDDLEWARE = _site_middleware(settings.MIDDLEWARE)
    settings.TWO_FACTOR_SMS_GATEWAY = GATEWAY
    return settings


def test_checks_pass_a_project_set_up_as_the_readme_says(configured: Any) -> None:
    assert _ids() == []


def test_w120_textflow_as_the_call_gateway(configured: Any) -> None:
    configured.TWO_FACTOR_CALL_GATEWAY = GATEWAY
    [message] = check_two_factor()
    assert message.id == "textflow.W120"
    assert "cannot make phone calls" in message.msg


def test_w120_calls_through_another_gateway_beside_textflows_sms(configured: Any) -> None:
    configured.TWO_FACTOR_CALL_GATEWAY = "two_factor.gateways.fake.Fake"
    [message] = check_two_factor()
    assert message.id == "textflow.W120"
    assert "outside textflow-django's send caps and Fraud Guard" in message.msg


def test_w121_no_thread_locals_middleware(configured: Any) -> None:
    configured.MIDDLEWARE = [m for m in configured.MIDDLEWARE if m != THREAD_LOCALS]
    assert _ids() == ["textflow.W121"]


def test_w122_no_message_middleware(configured: Any) -> None:
    configured.MIDDLEWARE = [m for m in configured.MIDDLEWARE if ".messages." not in m]
    assert _ids() == ["textflow.W122"]


def test_checks_leave_other_gateways_alone(settings: Any) -> None:
    settings.TWO_FACTOR_SMS_GATEWAY = "two_factor.gateways.fake.Fake"
    settings.MIDDLEWARE = []
    assert _ids() == []
    settings.TWO_FACTOR_SMS_GATEWAY = "no.such.Gateway"
    assert _ids() == []
    del settings.TWO_FACTOR_SMS_GATEWAY
    assert _ids() == []
    settings.TWO_FACTOR_CALL_GATEWAY = "two_factor.gateways.fake.Fake"
    assert _ids() == []


def test_checks_say_nothing_without_twofactors_phone_plugin(configured: Any) -> None:
    # (Apps first: an app's ready() may want the middleware, as allauth's does.)
    configured.INSTALLED_APPS = [
        app for app in configured.INSTALLED_APPS if app != "two_factor.plugins.phonenumber"
    ]
    configured.TWO_FACTOR_CALL_GATEWAY = GATEWAY
    configured.MIDDLEWARE = []
    assert _ids() == []


def test_every_check_comes_with_a_hint_of_its_own(configured: Any) -> None:
    configured.TWO_FACTOR_CALL_GATEWAY = GATEWAY
    configured.MIDDLEWARE = []
    messages = check_two_factor()
    assert sorted(m.id or "" for m in messages) == sorted(_ledger())
    for message in messages:
        assert isinstance(message.hint, str) and message.hint.strip()
        assert message.hint != message.msg


def test_the_checks_run_with_djangos(configured: Any) -> None:
    from django.core.checks import run_checks

    configured.TWO_FACTOR_CALL_GATEWAY = GATEWAY
    assert "textflow.W120" in [m.id for m in run_checks()]


def _ledger() -> set[str]:
    return set(re.findall(r"``(textflow\.[EW]\d{3})``", two_factor_checks.__doc__ or ""))


def test_ids_are_in_this_apps_ledger_and_in_no_other() -> None:
    used = set(
        re.findall(r'id="(textflow\.[EW]\d{3})"', Path(two_factor_checks.__file__).read_text())
    )
    assert used == _ledger() == {"textflow.W120", "textflow.W121", "textflow.W122"}
    core = set(re.findall(r"``(textflow\.[EW]\d{3})``", textflow_django.checks.__doc__ or ""))
    assert not used & core
