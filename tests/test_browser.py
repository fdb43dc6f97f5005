"""The example project in a real browser (Chromium through Playwright): the signup flow, the
pages a newcomer meets on the way (a number without +, the staff page as a non-staff user),
the API docs offline, the admin's lists on a 1280-pixel screen, the pages on a phone.

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
WEBOTP_NUMBER = "+12025550171"  # a number no other test here texts
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


def run_manage(site: Site, *command: str) -> None:
    """``manage.py <command>`` against the site's database."""
    subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=EXAMPLE,
        env=site.env,
        check=True,
        timeout=120,
        capture_output=True,
    )


def log_in(page: Any, site: Site, username: str, password: str) -> None:
    from playwright.sync_api import expect

    page.goto(site.url + "/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page).not_to_have_url(site.url + "/login/")


def test_a_number_without_the_country_code_is_explained(
    page: Any, site: Site, shot: Callable[..., None]
) -> None:
    """The example sets no DEFAULT_REGION: a number typed as at home says how to write it."""
    from playwright.sync_api import expect

    page.goto(site.url + "/phone/")
    page.get_by_label("Phone number").fill("202 555 0143")
    page.get_by_role("button", name="Text me a code").click()
    expect(page).to_have_url(site.url + "/phone/")
    expect(page.locator("main .errorlist")).to_contain_text("+ and the country code")
    shot("1-national-number", page)


def test_the_staff_page_tells_a_user_who_is_not_staff_how_to_sign_in_as_staff(
    page: Any, site: Site, shot: Callable[..., None]
) -> None:
    from playwright.sync_api import expect

    run_manage(site, "demo_admin")
    run_manage(
        site,
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_user('grace', password='{PASSWORD}')",
    )
    log_in(page, site, "grace", PASSWORD)
    response = page.goto(site.url + "/staff/bulk/")
    assert response.status == 403
    expect(page.get_by_role("heading", name="Staff only")).to_be_visible()
    main = page.locator("main")
    expect(main).to_contain_text("You are signed in as grace, who is not staff.")
    expect(main).to_contain_text("log out, then log in as admin (password admin)")
    expect(page.locator("nav .brand")).to_be_visible()  # the site's own page
    shot("1-not-staff", page)

    page.get_by_role("button", name="Log out and log in as staff").click()
    expect(page).to_have_url(site.url + "/login/?next=/staff/bulk/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("admin")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(site.url + "/staff/bulk/")
    expect(page.get_by_role("heading", name="Bulk SMS")).to_be_visible()


def test_the_pages_keep_a_margin_on_a_phone(
    browser: Any, site: Site, shot: Callable[..., None]
) -> None:
    """At 390 px wide (a phone), the main box keeps a margin on both sides and nothing
    scrolls sideways."""
    context = browser.new_context(viewport={"width": 390, "height": 844})
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        # An SMS in the dev inbox, so that its table is measured with a row in it.
        sent = page.request.post(
            site.url + "/api/phone/send-code/", data={"phone_number": "+12025550146"}
        )
        assert sent.status == 200, sent.text()
        measured = {}
        for path in ("/", "/phone/", "/login/", "/dev/inbox/"):
            page.goto(site.url + path)
            measured[path] = page.evaluate(
                """() => {
                    const box = document.querySelector("main").getBoundingClientRect();
                    return {
                        left: box.left,
                        right: window.innerWidth - box.right,
                        scrollWidth: document.documentElement.scrollWidth,
                    };
                }"""
            )
            if path == "/phone/":
                shot("1-phone-390px", page)
        for path, box in measured.items():
            assert box["left"] > 0 and box["right"] > 0, (path, box)
            assert box["scrollWidth"] <= 390, (path, box)
    finally:
        context.close()


#: One row of every list of the admin, with the longest values a real site has: a long
#: username, an IPv6 address, a long block reason, a long note, a big bulk job.
ADMIN_SEED = """
import datetime as dt
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone
from textflow_django.models import (
    BulkSMSJob, FraudAllowedPrefix, FraudBlock, OptOut, PhoneVerification, SMSReply,
)
from accounts.models import Profile, VerifiedNumber

now = timezone.now()
user = get_user_model().objects.create_user(
    "margaret.hamilton.apollo.guidance", email="margaret.hamilton@example.com"
)
PhoneVerification.objects.create(
    phone_number="+442071838750", country="GB", mode="local", status="verified", attempts=2,
    user=user, client_ip="2001:db8:85a3:8d3:1319:8a2e:370:7348", expires_at=now, verified_at=now,
)
BulkSMSJob.objects.create(
    text="Our spring sale starts tomorrow at 9:00: 20% off everything in every shop, online too.",
    source="accounts.Profile.phone where phone_verified=True, in pages of 500",
    status="finished", batch_size=500, total=123456, sent=123000, uncertain=56, invalid=400,
    duplicates=1234, batches_total=247, batches_sent=247, started_at=now, finished_at=now,
)
FraudBlock.objects.create(
    scope="prefix", value="+2519112",
    reason="40 codes sent in 60 min to this prefix, 1 verified (2%, below 20%): SMS pumping",
    sends=40, conversions=1, until=now + dt.timedelta(hours=20),
)
FraudAllowedPrefix.objects.create(
    prefix="+4420718", note="Head office switchboard: staff phones are verified here every day"
)
OptOut.objects.create(
    phone_number="+442071838750", source="import",
    note="Asked on the phone to the support desk on 3 March, confirmed by e-mail the same day",
)
SMSReply.objects.create(
    phone_number="+442071838750", action="opt_out",
    text="STOP " + "please stop sending me these promotional messages every single week " * 3,
)
Profile.objects.create(user=user, phone="+442071838750", phone_verified=True)
VerifiedNumber.objects.create(phone="+442071838750", token_digest="0" * 64, claimed_by=user)
Group.objects.create(name="Support staff who may unlock verifications")
"""


def test_every_admin_list_fits_a_1280_pixel_screen(
    browser: Any, site: Site, shot: Callable[..., None]
) -> None:
    """Each changelist of the admin (textflow-django's and the example's), with a row of long
    values, is no wider than a 1280-pixel screen: nothing to scroll sideways."""
    run_manage(site, "demo_admin")
    run_manage(site, "shell", "-c", ADMIN_SEED)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        log_in(page, site, "admin", "admin")
        page.goto(site.url + "/admin/")
        lists = page.locator("#content-main tr[class^='model-'] th a").evaluate_all(
            "links => links.map(a => a.getAttribute('href'))"
        )
        assert "/admin/textflow/phoneverification/" in lists
        assert "/admin/accounts/profile/" in lists
        widths = {}
        for url in lists:
            page.goto(site.url + url)
            assert page.locator("#result_list tbody tr").count() >= 1, url  # a row to measure
            # The admin puts the table in a box that scrolls sideways by itself (.results,
            # overflow-x: auto): the page never grows, the table has to fit its box.
            widths[url] = page.evaluate(
                """() => {
                    const results = document.querySelector("#changelist .results");
                    return [document.documentElement.scrollWidth,
                            results.scrollWidth - results.clientWidth];
                }"""
            )
            shot(url.strip("/").replace("/", "-"), page)
        too_wide = {url: w for url, w in widths.items() if w[0] > 1280 or w[1] > 0}
        assert too_wide == {}, "(page width, table overflow) in px"
    finally:
        context.close()


def test_the_api_docs_fetch_nothing_from_another_site(
    page: Any, site: Site, shot: Callable[..., None]
) -> None:
    """/api/docs/ renders with what the site serves: no font, script or style from a CDN.
    Redoc's bundle asks for its maker's logo at cdn.redoc.ly; the page's Content Security
    Policy stops that in the browser (failure "csp"): nothing leaves the machine."""
    from playwright.sync_api import expect

    requested: list[str] = []
    blocked: set[str] = set()
    page.on("request", lambda request: requested.append(request.url))
    page.on(
        "requestfailed",
        lambda request: blocked.add(request.url) if request.failure == "csp" else None,
    )
    page.goto(site.url + "/api/docs/")
    expect(page.get_by_role("heading", name="textflow-django example API")).to_be_visible()
    expect(page.locator("body")).to_contain_text("sendCode")
    page.wait_for_load_state("networkidle")
    shot("1-api-docs", page)
    # Its own files, and the blob: worker Redoc makes from them.
    own = (site.url + "/", f"blob:{site.url}/")
    elsewhere = [url for url in requested if not url.startswith(own) and url not in blocked]
    assert elsewhere == []


#: A stand-in for the phone's SMS: Chromium here has no SIM, so WebOTP's one browser call is
#: answered by the test (``window.deliverSms(code)``), as the phone would answer it.
FAKE_WEBOTP = """
window.OTPCredential = window.OTPCredential || function OTPCredential() {};
let deliver;
const arrived = new Promise((resolve) => { deliver = resolve; });
window.deliverSms = (code) => deliver({ code: code, type: "otp" });
navigator.credentials.get = (options) =>
  options && options.otp ? arrived : Promise.reject(new Error("not an OTP request"));
"""


def test_the_code_page_takes_the_code_the_browser_reads_from_the_sms(page: Any, site: Site) -> None:
    from playwright.sync_api import expect

    page.context.add_init_script(FAKE_WEBOTP)
    ask_for_a_code(page, site, WEBOTP_NUMBER)
    code = site.emulator.last_code(WEBOTP_NUMBER)
    assert code is not None
    page.evaluate("(code) => window.deliverSms(code)", code)
    # Nothing typed: the page filled the code in and sent the form by itself.
    expect(page).to_have_url(site.url + "/signup/")
    expect(page.get_by_text(f"Your number {WEBOTP_NUMBER} is verified.")).to_be_visible()
