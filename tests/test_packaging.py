"""What the wheel carries: every file of the package that is not Python must be named by
``[tool.setuptools.package-data]`` in pyproject.toml (Python modules are found by their
packages). A template or a catalog left out would install a package that fails at run time
(``TemplateDoesNotExist``) or speaks only English, while every test here, run from the
source tree, passes. Read from pyproject.toml, so no build (and no network) is needed."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "textflow_django"


def _data_files() -> set[Path]:
    return {
        path
        for path in PACKAGE.rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    }


def _shipped() -> set[Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["textflow_django"]
    return {path for pattern in patterns for path in PACKAGE.glob(pattern) if path.is_file()}


def test_every_data_file_of_the_package_ships_in_the_wheel() -> None:
    data = _data_files()
    assert any(p.suffix == ".mo" for p in data) and any(p.suffix == ".txt" for p in data)
    missing = sorted(str(p.relative_to(ROOT)) for p in data - _shipped())
    assert missing == []


def _in_manifest(path: Path, lines: list[list[str]]) -> bool:
    """Whether a MANIFEST.in ``include`` or ``recursive-include`` line takes ``path``."""
    relative = path.relative_to(ROOT)
    for words in lines:
        if words[0] == "include" and any(fnmatch(str(relative), w) for w in words[1:]):
            return True
        if words[0] == "recursive-include":
            directory, patterns = words[1], words[2:]
            inside = any(
                fnmatch(str(parent), directory) for parent in relative.parents if parent.parts
            )
            if inside and any(fnmatch(path.name, pattern) for pattern in patterns):
                return True
    return False


def test_the_sdist_manifest_takes_every_data_file() -> None:
    lines = [line.split() for line in (ROOT / "MANIFEST.in").read_text().splitlines()]
    lines = [words for words in lines if words and not words[0].startswith("#")]
    missing = sorted(str(p.relative_to(ROOT)) for p in _data_files() if not _in_manifest(p, lines))
    assert missing == []
