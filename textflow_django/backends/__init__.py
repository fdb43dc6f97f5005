"""Backends: the TextFlow API surface, chosen by ``TEXTFLOW["BACKEND"]``.

- ``textflow_django.backends.textflow.TextFlowBackend``: the real API (the default).
- ``textflow_django.backends.console.ConsoleBackend``: prints SMS; for development.
- ``textflow_django.backends.locmem.LocMemBackend``: keeps an outbox; for tests.
- ``textflow_django.backends.dummy.DummyBackend``: accepts and discards.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from ..conf import conf
from ..exceptions import TextFlowConfigurationError
from .base import BaseBackend

__all__ = ["BaseBackend", "get_backend", "load_backend_class"]

_local = threading.local()


def load_backend_class(path: str) -> type[BaseBackend]:
    """Import the backend class at ``path``. Raises ``TextFlowConfigurationError``."""
    try:
        cls = import_string(path)
    except ImportError as err:
        raise TextFlowConfigurationError(
            f"Cannot import TEXTFLOW['BACKEND'] {path!r}: {err}"
        ) from err
    if not (isinstance(cls, type) and issubclass(cls, BaseBackend)):
        raise TextFlowConfigurationError(
            f"TEXTFLOW['BACKEND'] {path!r} is not a subclass of "
            "textflow_django.backends.base.BaseBackend"
        )
    return cls


def get_backend(path: str | None = None, **options: Any) -> BaseBackend:
    """The backend for ``path`` (default: ``TEXTFLOW["BACKEND"]``).

    Without ``options`` the instance is reused within a thread (so the real backend keeps its
    pooled connections) until the ``TEXTFLOW`` setting changes; with options a new instance
    is built each call.
    """
    path = path or conf.BACKEND
    if options:
        return load_backend_class(path)(**options)
    cache: dict[str, BaseBackend] | None = getattr(_local, "backends", None)
    if cache is None:
        cache = _local.backends = {}
    backend = cache.get(path)
    if backend is None:
        backend = cache[path] = load_backend_class(path)()
    return backend


@receiver(setting_changed)
def _forget_backends(*, setting: str, **kwargs: Any) -> None:
    # Only this thread's cache can be reached; other threads' instances rebuild their client
    # when they see new settings (TextFlowBackend compares its config on every call).
    if setting == "TEXTFLOW":
        _local.backends = {}
