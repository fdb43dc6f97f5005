from __future__ import annotations

import pytest
from django.test import override_settings

from textflow_django.conf import DEFAULTS, conf


def test_defaults_apply_when_unset():
    with override_settings(TEXTFLOW={}):
        assert conf.API_KEY == ""
        assert conf.BASE_URL == "https://textflow.me/api"
        assert conf.BACKEND == "textflow_django.backends.textflow.TextFlowBackend"
        assert conf.TIMEOUT == 10.0
        assert conf.SERVICE_NAME == ""
        assert conf.CODE_TTL == 600


def test_setting_absent_altogether():
    from django.conf import settings

    with override_settings():
        del settings.TEXTFLOW
        assert conf.CODE_TTL == 600


def test_values_are_read_at_call_time():
    with override_settings(TEXTFLOW={"CODE_TTL": 60, "TIMEOUT": 2}):
        assert conf.CODE_TTL == 60
        assert conf.TIMEOUT == 2.0
        with override_settings(TEXTFLOW={"CODE_TTL": 120}):
            assert conf.CODE_TTL == 120
        assert conf.CODE_TTL == 60


def test_every_default_has_a_property():
    for key in DEFAULTS:
        assert isinstance(getattr(type(conf), key), property), key


def test_unknown_key_is_an_error():
    with pytest.raises(KeyError):
        conf.get("API_KEYS")
