"""django-allauth's phone signup through textflow_django.contrib.allauth in a real browser
(Chromium through Playwright): a person types a number on allauth's signup page, is told a
code was sent, types the code the SMS carried (textflow-django's text, with the WebOTP
line), and is signed in; a number whose prefix the Fraud Guard blocked is refused on the
login page with the form's error.

The site is this test suite's own (pytest-django's live server, allauth's settings from
tests/allauth_settings.py, the locmem backend), so the SMS are read from the outbox.
Screenshots go where tests/test_browser.py puts its own. Skips as that module does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.allauth_settings import ALLAUTH_SETTINGS
from tests.conftest import tf
from tests.test_browser import browser, screenshot_dir  # noqa: F401 - shared fixtures
from tests.test_contrib_allauth import BLOCKED, BLOCKED_MESSAGE, NUMBER, block_prefix, user_with
from textflow_django.backends import locmem

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _orm_beside_playwright(monkeypatch: pytest.MonkeyPatch) -> None:
    """Playwright's sync API keeps an event loop running in this thread, which Django takes
    for an async context and refuses the ORM in: the test's own rows, and the database's
    teardown (autouse: set up before, so torn down after, the database fixtures). Nothing
    here runs concurrently with the ORM on this thread."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def url(request: pytest.FixtureRequest, transactional_db: None, settings: Any) -> str:
    """The suite's live server, set up as a phone-only allauth site (tests/test_fuzz_api.py's
    live_url says why the static and media URLs are set, before the server starts)."""
    settings.STATIC_URL = "/static/"
    settings.MEDIA_URL = "/media/"
    for name, value in ALLAUTH_SETTINGS.items():
        setattr(settings, name, value)
    tf(settings, WEBOTP_DOMAIN="localhost")
    return str(request.getfixturevalue("live_server").url)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:  # noqa: F811 - the shared fixture
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def shot(screenshot_dir: Path, request: pytest.FixtureRequest) -> Callable[[str, Any], None]:  # noqa: F811
    prefix = "allauth-" + request.node.name.removeprefix("test_")

    def take(name: str, target: Any) -> None:
        target.screenshot(path=str(screenshot_dir / f"{prefix}-{name}.png"), full_page=True)

    return take


def test_phone_signup_in_the_browser(page: Any, url: str, shot: Callable[[str, Any], None]) -> None:
    from playwright.sync_api import expect

    page.goto(f"{url}/accounts/signup/")
    page.get_by_label("Phone").fill(NUMBER)
    shot("1-signup", page)
    page.get_by_role("button", name="Sign Up").click()

    expect(page).to_have_url(re.compile(r"/accounts/phone/verify/$"))
    expect(page.get_by_text(f"A verification code has been sent to {NUMBER}.")).to_be_visible()
    [message] = locmem.outbox
    code = re.findall(r"\d{6}", message.text)[-1]
    assert message.phone_number == NUMBER
    assert message.text == f"Your verification code for Tests is: {code}\n\n@localhost #{code}"
    page.get_by_label("Code").fill(code)
    shot("2-code", page)
    page.get_by_role("button", name="Confirm").click()

    expect(page).to_have_url(f"{url}/")
    expect(page.get_by_text(re.compile(r"^home of (?!AnonymousUser)"))).to_be_visible()
    shot("3-signed-in", page)


def test_a_blocked_prefix_in_the_browser(
    page: Any, url: str, shot: Callable[[str, Any], None]
) -> None:
    from playwright.sync_api import expect

    user_with(BLOCKED)
    block_prefix(BLOCKED)
    page.goto(f"{url}/accounts/login/")
    page.get_by_label("Phone").fill(BLOCKED)
    page.get_by_role("button", name="Sign In").click()

    expect(page.get_by_text(BLOCKED_MESSAGE)).to_be_visible()
    expect(page).to_have_url(f"{url}/accounts/login/")
    assert locmem.outbox == []
    shot("refused", page)
