"""The example project's signup flow in a real browser (Chromium through Playwright).

The example runs as it does for a person: its dev server in a subprocess (own SQLite file,
own port), the real TextFlow backend talking HTTP to an emulator, and a browser that reads
the code from the dev inbox page. A screenshot of every step goes to ``TEXTFLOW_SCREENSHOTS``
(default ``artifacts/screenshots/``).

Needs Debian's ``chromium`` (``/usr/bin/chromium``) and the ``playwright`` package; without
them the tests skip, unless ``TEXTFLOW_REQUIRE_SERVICES=1`` (CI), where they fail.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.test_example_project import run_example_site
from textflow_django.testing import TextFlowEmulator

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_project"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
NUMBER = "+12025550143"
OTHER = "+12025550144"
PASSWORD = "correct-horse-battery-9"  # noqa: S105 - a test password

pytestmark = pytest.mark.slow


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is missing (pip install playwright)"
    return None


@dataclass(frozen=True)
class Site:
    url: str
    emulator: TextFlowEmulator
    #: The environment the site runs in (its settings and database), for manage.py commands.
    env: dict[str, str]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The example's dev server on a free port, its own database, against an emulator."""
    tmp = tmp_path_factory.mktemp("example-site")
    with TextFlowEmulator() as emulator, run_example_site(tmp, emulator.url) as running:
        yield Site(running.url, emulator, running.env)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _missing()
    if missing:
        if os.environ.get("TEXTFLOW_REQUIRE_SERVICES") == "1":
            pytest.fail(f"TEXTFLOW_REQUIRE_SERVICES=1 but {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def screenshot_dir(request: pytest.FixtureRequest) -> Path:
    folder = Path(os.environ.get("TEXTFLOW_SCREENSHOTS") or ROOT / "artifacts" / "screenshots")
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    # Shown even under output capture: CI logs should say where the pictures are.
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print(f"\nbrowser test screenshots: {folder}")
    else:
        print(f"browser test screenshots: {folder}")
    return folder


@pytest.fixture
def page(browser: Any, site: Site) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def shot(screenshot_dir: Path, request: pytest.FixtureRequest) -> Callable[..., None]:
    prefix = request.node.name.removeprefix("test_")

    def take(name: str, target: Any) -> None:
        target.screenshot(path=str(screenshot_dir / f"{prefix}-{name}.png"), full_page=True)

    return take


def read_code_in_dev_inbox(page: Any, site: Site, number: str) -> tuple[str, Any]:
    """Open the dev inbox in a new tab and read the newest code sent to ``number``; return
    the code and the tab."""
    inbox = page.context.new_page()
    inbox.goto(f"{site.url}/dev/inbox/")
    code: str = inbox.locator(f'tr.sms[data-phone="{number}"] td.code').first.inner_text()
    return code.strip(), inbox


def ask_for_a_code(page: Any, site: Site, number: str) -> None:
    from playwright.sync_api import expect

    page.goto(site.url + "/")
    page.locator("main").get_by_role("link", name="Sign up").click()
    expect(page).to_have_url(site.url + "/phone/")
    page.get_by_label("Phone number").fill(number)
    page.get_by_role("button", name="Text me a code").click()
    expect(page).to_have_url(site.url + "/phone/code/")
    expect(page.locator("main")).to_contain_text(f"We texted a code to {number}.")


def test_signup_in_a_browser(page: Any, site: Site, shot: Callable[..., None]) -> None:
    from playwright.sync_api import expect

    page.goto(site.url + "/")
    shot("1-home", page)
    ask_for_a_code(page, site, NUMBER)
    shot("2-code-sent", page)

    code, inbox = read_code_in_dev_inbox(page, site, NUMBER)
    # The example runs the default "local" VERIFY_MODE: a 6-digit code of textflow-django's
    # own, in a plain SMS (/send-sms) whose text ends with it.
    texts = [m.text for m in site.emulator.messages if m.phone_number == NUMBER]
    assert texts[-1] == f"Your verification code for Demo is: {code}"
    assert len(code) == 6
    shot("3-dev-inbox", inbox)
    inbox.close()

    page.get_by_label("Code").fill(code)
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(site.url + "/signup/")
    expect(page.get_by_text(f"Your number {NUMBER} is verified.")).to_be_visible()
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password confirmation").fill(PASSWORD)
    shot("4-account", page)
    page.get_by_role("button", name="Create account").click()

    expect(page).to_have_url(site.url + "/profile/")
    expect(page.get_by_role("heading", name="ada")).to_be_visible()
    expect(page.locator("#phone")).to_contain_text(NUMBER)
    expect(page.locator("#phone .badge")).to_have_text("verified")
    shot("5-profile", page)


def test_a_wrong_code_in_a_browser(page: Any, site: Site, shot: Callable[..., None]) -> None:
    from playwright.sync_api import expect

    ask_for_a_code(page, site, OTHER)
    code, inbox = read_code_in_dev_inbox(page, site, OTHER)
    inbox.close()
    wrong = f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"

    page.get_by_label("Code").fill(wrong)
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("alert")).to_have_text("The code is not valid. 4 attempts left.")
    expect(page).to_have_url(site.url + "/phone/code/")  # still on step 2
    shot("1-wrong-code", page)


def test_a_send_textflow_did_not_confirm_in_a_browser(
    page: Any, site: Site, shot: Callable[..., None]
) -> None:
    """TextFlow answers a 5xx: the SMS may have gone out, so the page moves on to the code
    step and says the code may still arrive (not "nothing was used up")."""
    from playwright.sync_api import expect

    number = "+12025550145"
    site.emulator.fault("status", path="/send-sms", status=503)
    ask_for_a_code(page, site, number)
    expect(page.locator(".alert.warning")).to_contain_text(
        "The SMS service did not confirm the send, so the code may still arrive"
    )
    shot("1-may-arrive", page)
    page.get_by_role("button", name="Resend code").click()
    expect(page.locator(".alert.error")).to_contain_text("before asking for a new code.")
    shot("2-resend-waits", page)


#: Traffic for the insights page, written straight into the example's database: France
#: converts (120 codes, 90 verified, over four weeks), a Nigerian prefix is pumped and blocked.
INSIGHTS_SEED = """
import datetime as dt
from django.utils import timezone
from textflow_django.models import FraudBlock, PhoneVerification

now = timezone.now()

def seed(days, number, country, sent, verified):
    rows = PhoneVerification.objects.bulk_create(
        PhoneVerification(
            phone_number=number,
            country=country,
            mode="local",
            status="verified" if n < verified else "pending",
            expires_at=now,
        )
        for n in range(sent)
    )
    ids = [row.pk for row in rows]
    PhoneVerification.objects.filter(pk__in=ids).update(created_at=now - dt.timedelta(days=days))

for days in range(0, 28, 3):
    seed(days, "+33612345678", "FR", 12, 9)
seed(1, "+447400123456", "GB", 30, 2)
seed(2, "+2348031234567", "NG", 40, 1)
FraudBlock.objects.create(
    scope="prefix",
    value="+2348031",
    reason="40 codes sent in 60 min, 1 verified (2%, below 20%)",
    sends=40,
    conversions=1,
    until=now + dt.timedelta(hours=20),
)
"""


def test_the_fraud_guard_insights_in_the_admin(
    page: Any, site: Site, shot: Callable[..., None]
) -> None:
    """A staff member signs in to the admin, opens the Fraud Guard's blocks and their
    traffic insights: the charts are drawn (inline SVG, nothing fetched) with the figures."""
    from playwright.sync_api import expect

    for command in (["demo_admin"], ["shell", "-c", INSIGHTS_SEED]):
        subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=EXAMPLE,
            env=site.env,
            check=True,
            timeout=120,
            capture_output=True,
        )
    page.goto(site.url + "/admin/textflow/fraudblock/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("admin")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#result_list")).to_contain_text("+2348031")
    page.get_by_role("link", name="Traffic insights").click()

    expect(page.get_by_role("heading", name="Traffic insights")).to_be_visible()
    chart = page.locator("svg#tf-daily")
    expect(chart).to_be_visible()
    expect(chart.locator("g.tf-day")).to_have_count(30)
    assert chart.bounding_box()["height"] > 100  # drawn, not collapsed
    france = page.locator('#tf-countries tr[data-country="FR"] td')
    expect(france).to_have_text(["FR", "120", "90", "75.0\u00a0%", ""])
    expect(page.locator('#tf-countries tr[data-country="FR"] svg rect')).to_have_count(2)
    expect(page.locator('#tf-prefixes tr[data-prefix="+2348031"] td').nth(3)).to_have_text("39")
    expect(page.locator('#tf-blocks tr[data-block="+2348031"]')).to_contain_text("below 20%")
    shot("1-insights", page)
