"""The test kit as a user meets it: the pytest fixtures in a fresh project, and Django's runner."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

pytest_plugins = ["pytester"]

ROOT = Path(__file__).parent.parent


def test_fixtures_in_a_users_project(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    # The inner run makes and drops its own test database: under the same PGDATABASE it
    # would be this session's ("test_<name>"), dropped under the tests still running.
    monkeypatch.setenv("PGDATABASE", os.environ.get("PGDATABASE", "textflow") + "_plugin")
    pytester.makepyfile(
        test_user=textwrap.dedent("""
            import pytest
            from textflow_django.backends import get_backend, locmem

            @pytest.mark.django_db  # send_sms reads the opt-out list
            def test_first(sms_outbox):
                get_backend().send_sms("+12025550143", "one")
                assert len(sms_outbox) == 1

            def test_second_starts_empty():
                assert locmem.outbox == []

            @pytest.mark.django_db
            def test_live(textflow_live):
                get_backend().send_sms("+12025550143", "live")
                assert [m.text for m in textflow_live.messages] == ["live"]
                assert len(textflow_live.calls("/send-sms")) == 1

            def test_live_is_reset(textflow_emulator):
                assert textflow_emulator.requests == []

            def test_mixing_with_the_settings_fixture(settings, textflow_live):
                settings.TEXTFLOW = {**settings.TEXTFLOW, "TIMEOUT": 3}
                assert settings.TEXTFLOW["BASE_URL"] == textflow_live.url

            def test_nothing_leaked_from_the_previous_test():
                from django.conf import settings
                assert settings.TEXTFLOW["BACKEND"].endswith("LocMemBackend")
                assert "TIMEOUT" not in settings.TEXTFLOW
        """)
    )
    # No -p: the plugin must load by itself, through the package's pytest11 entry point.
    result = pytester.runpytest_subprocess("--ds", "tests.settings", "-q")
    result.assert_outcomes(passed=6)


def test_djangos_test_runner_empties_the_outbox(tmp_path):
    (tmp_path / "runner_cases.py").write_text(
        textwrap.dedent("""
        from django.test import TestCase
        from textflow_django.backends import locmem
        from textflow_django.backends.locmem import LocMemBackend

        class Cases(TestCase):  # a database: send_sms reads the opt-out list
            def test_a_sends(self):
                LocMemBackend().send_sms("+12025550143", "a")
                self.assertEqual(len(locmem.outbox), 1)

            def test_b_sees_an_empty_outbox(self):
                self.assertEqual(locmem.outbox, [])
    """)
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]),
        # Its own test database, not this session's (see the test above).
        "PGDATABASE": os.environ.get("PGDATABASE", "textflow") + "_runner",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "django", "test", "runner_cases", "-v", "2"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Ran 2 tests" in proc.stderr
    assert "test_b_sees_an_empty_outbox" in proc.stderr and "ok" in proc.stderr
