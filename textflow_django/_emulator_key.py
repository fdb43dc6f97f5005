"""The bundled TextFlow emulator's built-in API key, in a leaf of its own.

The emulator (``textflow_django.testing``) accepts it, and the system checks recognise it
(``textflow.E017``) without loading the emulator's HTTP server on every ``manage.py`` run.
It is public and worthless against TextFlow itself.
"""

from __future__ import annotations

from typing import Final

__all__ = ["EMULATOR_API_KEY"]

#: The key the emulator accepts unless told otherwise: 64 alphanumerics like a real key, and
#: obviously fake so it is harmless in fixtures, settings files and logs.
EMULATOR_API_KEY: Final[str] = "tfemuLocalTextFlowEmulatorKeyNotValidOnTextFlowMe000000000000000"
