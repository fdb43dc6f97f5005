"""The emulator forwards a phone's replies as TextFlow does (textflow-api.md, "Incoming
replies"): a JSON POST ``{"phone_number", "text", "secret"}`` to the configured URL, retried
until answered 200.

The site is a tiny HTTP server in the test (:class:`Site`), which records every POST and
answers the statuses the test queues. The backoff runs on the emulator's clock: with a
test's fixed clock no time really passes (the clock moves itself). No Django here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from textflow_django.testing import EMULATOR_API_KEY, Reply, TextFlowEmulator

from .test_emulator_cli import restore_signals, run_main  # noqa: F401 - the fixture too

NUMBER = "+12025550143"
SECRET = "s3cret-shared-with-the-site"  # noqa: S105 - a test secret
T0 = 1_700_000_000.0
AUTH = {"Authorization": f"Bearer {EMULATOR_API_KEY}"}


@dataclass(frozen=True)
class Post:
    path: str
    content_type: str
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Site:
    """A web site's reply webhook: records each POST, answers the next queued status (then
    200), or a redirect for a status in 300-399."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.answers: list[int] = []
        self._lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with site._lock:
                    site.posts.append(Post(self.path, self.headers.get("Content-Type", ""), body))
                    status = site.answers.pop(0) if site.answers else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere/")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/replies/"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site() -> Iterator[Site]:
    made = Site()
    yield made
    made.close()


@pytest.fixture
def emulator(site: Site) -> Iterator[TextFlowEmulator]:
    """An emulator on a fixed clock whose replies go to ``site``."""
    with TextFlowEmulator(clock=lambda: T0, reply_url=site.url, reply_secret=SECRET) as emu:
        yield emu


def _clock_ms(emulator: TextFlowEmulator) -> int:
    """The emulator's clock, as /send-sms reports it (ms)."""
    sms = {"phone_number": NUMBER, "text": "x"}
    answer = requests.post(emulator.url + "/send-sms", json=sms, headers=AUTH, timeout=10)
    return int(answer.json()["data"]["timestamp"])


def test_a_reply_is_posted_as_textflow_posts_it(emulator: TextFlowEmulator, site: Site) -> None:
    made = emulator.reply(NUMBER, "STOP")
    [post] = site.posts
    assert post.path == "/replies/"
    assert post.content_type == "application/json"
    assert post.json == {"phone_number": NUMBER, "text": "STOP", "secret": SECRET}
    assert made == Reply(NUMBER, "STOP", site.url, (200,))
    assert (made.attempts, made.status, made.delivered) == (1, 200, True)
    assert emulator.replies == [made]  # the emulator's record of the replies it received
    assert SECRET not in repr(made) and SECRET not in json.dumps(made.as_dict())


def test_non_200_is_retried_with_backoff_on_the_emulators_clock(
    emulator: TextFlowEmulator, site: Site
) -> None:
    site.answers = [500, 500]
    before = _clock_ms(emulator)
    made = emulator.reply(NUMBER, "STOP")
    assert made.statuses == (500, 500, 200) and made.delivered
    assert [p.json for p in site.posts] == [
        {"phone_number": NUMBER, "text": "STOP", "secret": SECRET}
    ] * 3
    # Waited 1 s, then 2 s, of the emulator's clock (fixed: it moved itself, nothing slept).
    assert _clock_ms(emulator) - before == 3000


def test_it_gives_up_after_the_last_attempt(emulator: TextFlowEmulator, site: Site) -> None:
    site.answers = [500] * 10
    before = _clock_ms(emulator)
    made = emulator.reply(NUMBER, "STOP", attempts=3)
    assert made.statuses == (500, 500, 500)
    assert (made.attempts, made.status, made.delivered) == (3, 500, False)
    assert len(site.posts) == 3
    assert _clock_ms(emulator) - before == 3000  # waits 1 + 2; none after the last try
    # The default: four tries in all, waiting 1, 2 and 4 s.
    site.answers = [503] * 10
    before = _clock_ms(emulator)
    assert emulator.reply(NUMBER, "STOP").statuses == (503,) * 4
    assert _clock_ms(emulator) - before == 7000
    assert [r.delivered for r in emulator.replies] == [False, False]


@pytest.mark.parametrize("status", [201, 204, 302, 403, 404])
def test_anything_but_200_is_retried_and_redirects_are_not_followed(
    emulator: TextFlowEmulator, site: Site, status: int
) -> None:
    site.answers = [status]
    made = emulator.reply(NUMBER, "STOP", backoff=0)
    assert made.statuses == (status, 200)
    assert [p.path for p in site.posts] == ["/replies/", "/replies/"]  # never /elsewhere/


def test_no_answer_is_retried_and_recorded_as_none(site: Site) -> None:
    site.close()  # nothing listens on its port any more
    with TextFlowEmulator(clock=lambda: T0, reply_url=site.url) as emulator:
        made = emulator.reply(NUMBER, "STOP", attempts=2)
    assert made.statuses == (None, None) and made.status is None and not made.delivered


def test_settings_setters_and_reset(site: Site) -> None:
    with TextFlowEmulator(clock=lambda: T0) as emulator:
        assert emulator.reply_url is None and emulator.reply_secret == ""
        with pytest.raises(RuntimeError, match="reply_url"):
            emulator.reply(NUMBER, "STOP")
        emulator.reply_url = site.url
        emulator.reply(NUMBER, "START")
        assert site.posts[-1].json == {"phone_number": NUMBER, "text": "START", "secret": ""}
        emulator.reply_secret = SECRET
        emulator.reply(NUMBER, "STOP")
        assert site.posts[-1].json["secret"] == SECRET
        assert len(emulator.replies) == 2
        emulator.reset()  # back to the constructor's settings; replies forgotten
        assert emulator.reply_url is None and emulator.reply_secret == ""
        assert emulator.replies == []


@pytest.mark.parametrize(
    ("args", "kwargs", "says"),
    [
        (("12025550143", "STOP"), {}, "E.164"),
        ((NUMBER, ""), {}, "non-empty"),
        ((NUMBER, "   "), {}, "non-empty"),
        ((NUMBER, "x" * 1531), {}, "at most 1530"),
        ((NUMBER, "STOP"), {"attempts": 0}, "attempts"),
        ((NUMBER, "STOP"), {"attempts": 11}, "attempts"),
        ((NUMBER, "STOP"), {"backoff": -1}, "backoff"),
    ],
)
def test_bad_replies_are_refused_before_anything_is_posted(
    emulator: TextFlowEmulator, site: Site, args: tuple[Any, ...], kwargs: Any, says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        emulator.reply(*args, **kwargs)
    assert site.posts == [] and emulator.replies == []


@pytest.mark.parametrize("url", ["ftp://example.com/", "example.com/replies/", "http://", 5])
def test_a_reply_url_must_be_http(url: Any) -> None:
    with pytest.raises(ValueError, match="reply_url"):
        TextFlowEmulator(reply_url=url)
    emulator = TextFlowEmulator()
    with pytest.raises(ValueError, match="reply_url"):
        emulator.reply_url = url


# -- the control endpoints -----------------------------------------------------------------


def _control(emulator: TextFlowEmulator, method: str, name: str, **kwargs: Any) -> Any:
    root = emulator.url.removesuffix("/api")
    return requests.request(method, f"{root}/_emulator/{name}", timeout=10, **kwargs)


def test_post_reply_forwards_it_and_says_what_happened(
    emulator: TextFlowEmulator, site: Site
) -> None:
    site.answers = [500]
    answer = _control(emulator, "POST", "reply", json={"phone_number": NUMBER, "text": "STOP"})
    assert answer.status_code == 200
    shown = {
        "phone_number": NUMBER,
        "text": "STOP",
        "url": site.url,
        "attempts": 2,
        "status": 200,
        "statuses": [500, 200],
        "delivered": True,
    }
    assert answer.json() == shown
    assert [p.json["secret"] for p in site.posts] == [SECRET, SECRET]
    listed = _control(emulator, "GET", "replies")
    assert listed.json() == {"replies": [shown], "total": 1}
    # Under the API root too, as every control endpoint.
    also = requests.get(emulator.url + "/_emulator/replies", timeout=10)
    assert also.json()["total"] == 1


def test_post_reply_takes_the_schedule(emulator: TextFlowEmulator, site: Site) -> None:
    site.answers = [500] * 5
    body = {"phone_number": NUMBER, "text": "STOP", "attempts": 2, "backoff": 0}
    answer = _control(emulator, "POST", "reply", json=body)
    assert answer.json()["statuses"] == [500, 500]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"phone_number": NUMBER}, 400, "phone_number and text are required"),
        ({"phone_number": "nope", "text": "STOP"}, 400, "E.164"),
        ({"phone_number": NUMBER, "text": "STOP", "secret": "x"}, 400, "Unknown reply fields"),
        ({"phone_number": NUMBER, "text": "STOP", "attempts": "3"}, 400, "attempts"),
    ],
)
def test_post_reply_refuses_bad_bodies(
    emulator: TextFlowEmulator, site: Site, body: dict[str, Any], status: int, says: str
) -> None:
    answer = _control(emulator, "POST", "reply", json=body)
    assert answer.status_code == status and says in answer.json()["message"]
    assert site.posts == []


def test_post_reply_without_a_reply_url_says_how_to_set_one() -> None:
    with TextFlowEmulator() as emulator:
        answer = _control(emulator, "POST", "reply", json={"phone_number": NUMBER, "text": "x"})
        assert answer.status_code == 409
        assert "--reply-url" in answer.json()["message"]
        assert _control(emulator, "GET", "reply").status_code == 405


# -- the command line ----------------------------------------------------------------------


def test_main_takes_reply_url_and_secret(
    monkeypatch: pytest.MonkeyPatch,
    restore_signals: None,  # noqa: F811 - the fixture imported above
    site: Site,
) -> None:
    seen: dict[str, Any] = {}

    def client(url: str) -> None:
        root = url.removesuffix("/api")
        body = {"phone_number": NUMBER, "text": "STOP"}
        seen["answer"] = requests.post(f"{root}/_emulator/reply", json=body, timeout=10).json()

    argv = ["--port", "0", "--reply-url", site.url, "--reply-secret", SECRET]
    code, out = run_main(monkeypatch, argv, client)
    assert code == 0
    assert seen["answer"]["delivered"] is True
    assert site.posts[0].json == {"phone_number": NUMBER, "text": "STOP", "secret": SECRET}
    assert SECRET not in out


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--reply-secret", SECRET], "--reply-secret needs --reply-url"),
        (["--reply-url", "ftp://example.com/"], "reply_url must be an http(s) URL"),
    ],
)
def test_main_refuses_bad_reply_options(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from textflow_django.testing import __main__ as cli

    assert cli.main(["--port", "0", *argv]) == 1
    err = capsys.readouterr().err
    assert says in err and SECRET not in err


def test_python_m_forwards_replies_and_never_prints_the_secret(site: Site) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "textflow_django.testing", "--port", "0",
         "--reply-url", site.url, "--reply-secret", SECRET],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.rsplit(" ", 1)[-1].strip()
        body = {"phone_number": NUMBER, "text": "STOP"}
        root = url.removesuffix("/api")
        answer = requests.post(f"{root}/_emulator/reply", json=body, timeout=10)
        assert answer.json()["delivered"] is True
    finally:
        process.terminate()
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert site.posts[0].json["secret"] == SECRET
    assert SECRET not in line + out + err


def test_the_emulator_with_replies_loads_no_django_and_no_client() -> None:
    script = (
        "import sys\n"
        "import textflow_django.testing.__main__\n"
        "from textflow_django.testing._emulator import _replies\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'requests')\n"
        "             or m.startswith(('textflow_django.client', 'textflow_django.conf')))\n"
        "print(bad)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
