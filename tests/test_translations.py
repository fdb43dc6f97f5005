"""The shipped translations.

- Every message the package marks is in each shipped catalog (``textflow_django/locale``),
  translated in every plural form and not fuzzy, and the catalogs hold nothing else: a fresh
  ``makemessages`` over a copy of the package is the reference, so a string added, changed or
  removed without regenerating the catalogs fails here (in CI, not in a user's language).
- Each compiled catalog (``django.mo``) is its ``django.po`` compiled now.
- The API answers in the request's language (``Accept-Language`` through Django's
  ``LocaleMiddleware``), one exact message per shipped language; a language the package does
  not ship gets English. The code SMS follows the request's language in "local" mode; in
  "textflow" mode TextFlow writes it, in its own words.

``makemessages`` and ``msgfmt`` are GNU gettext's: without them these checks skip, unless
``TEXTFLOW_REQUIRE_SERVICES=1`` (CI), where they fail.

The catalogs are regenerated (``make messages``) with ``django-admin makemessages --all
--add-location file --no-obsolete`` (:data:`MAKEMESSAGES_OPTIONS`) then ``django-admin
compilemessages``, both run in ``textflow_django/``. References name files relative to the
package and carry no line numbers, so a regeneration changes a catalog only when its
messages change. A language ships when its directory is in ``textflow_django/locale``.
"""

from __future__ import annotations

import ast
import gettext
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from django.core.management import call_command
from django.utils import translation
from rest_framework.test import APIClient

import textflow_django
from textflow_django._sms import segments
from textflow_django.backends import locmem
from textflow_django.verification import code_text

from .conftest import REQUIRES_SERVICES

PACKAGE = Path(textflow_django.__file__).resolve().parent
LOCALE = PACKAGE / "locale"
#: The languages the package ships: its locale directories (``make messages`` fills each).
LANGUAGES = sorted(path.name for path in LOCALE.iterdir() if path.is_dir())
#: The languages it promises (issue 15).
PROMISED = {"de", "es", "fr", "it", "pt_BR"}
#: ``makemessages``' options, the same for ``make messages`` and for the reference here.
MAKEMESSAGES_OPTIONS = {"add_location": "file", "no_obsolete": True}

HEADER = ("", "")  # the (msgctxt, msgid) of a catalog's header entry


# -- reading catalogs -------------------------------------------------------------------------


@dataclass
class Entry:
    """One message of a ``.po`` or ``.pot`` file."""

    msgctxt: str
    msgid: str
    msgid_plural: str | None
    msgstr: list[str]
    flags: set[str]
    obsolete: bool

    @property
    def key(self) -> tuple[str, str]:
        return (self.msgctxt, self.msgid)


_KEYWORD_RE = re.compile(r"(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d+)\])?)\s+(\".*\")\Z")


def read_po(path: Path) -> dict[tuple[str, str], Entry]:
    """The entries of a ``.po``/``.pot`` file by (msgctxt, msgid), obsolete ones included.

    Enough of the PO format for what ``makemessages`` writes: comments and flags, contexts,
    plurals, strings continued over several lines, obsolete (``#~``) entries.
    """
    entries: dict[tuple[str, str], Entry] = {}
    fields: dict[str, str] = {}
    forms: dict[int, str] = {}
    flags: set[str] = set()
    obsolete = False
    last: tuple[str, int | None] | None = None

    def finish() -> None:
        nonlocal fields, forms, flags, obsolete, last
        if "msgid" in fields:
            msgstr = [forms[n] for n in sorted(forms)] if forms else [fields.get("msgstr", "")]
            entry = Entry(
                fields.get("msgctxt", ""),
                fields["msgid"],
                fields.get("msgid_plural"),
                msgstr,
                flags,
                obsolete,
            )
            entries[entry.key] = entry
        fields, forms, flags, obsolete, last = {}, {}, set(), False, None

    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        retired = line.startswith("#~")
        if retired:
            line = line[2:].strip()
        if ("msgstr" in fields or forms) and not line.startswith(('"', "msgstr")):
            finish()  # a blank line, a comment or a msgctxt/msgid begins the next entry
        obsolete = obsolete or retired
        if not line or line.startswith("|"):
            continue
        if line.startswith("#"):
            if line.startswith("#,"):
                flags |= {flag.strip() for flag in line[2:].split(",")}
            continue
        if line.startswith('"'):
            assert last is not None, f"{path}: a continued string with nothing before it"
            name, index = last
            if index is None:
                fields[name] += ast.literal_eval(line)
            else:
                forms[index] += ast.literal_eval(line)
            continue
        match = _KEYWORD_RE.match(line)
        assert match is not None, f"{path}: cannot read {raw!r}"
        keyword, form, quoted = match.groups()
        if form is not None:
            forms[int(form)] = ast.literal_eval(quoted)
            last = ("msgstr", int(form))
        else:
            fields[keyword] = ast.literal_eval(quoted)
            last = (keyword, None)
    finish()
    return entries


def plural_count(catalog: dict[tuple[str, str], Entry]) -> int:
    """``nplurals`` of the catalog's ``Plural-Forms`` header."""
    found = re.search(r"nplurals\s*=\s*(\d+)", catalog[HEADER].msgstr[0])
    assert found is not None, "no Plural-Forms header"
    return int(found.group(1))


def catalog_path(language: str) -> Path:
    return LOCALE / language / "LC_MESSAGES" / "django.po"


# -- the reference: a fresh extraction --------------------------------------------------------


def _need(program: str) -> str:
    """The path of a GNU gettext program, or skip (fail in CI) without it."""
    path = shutil.which(program)
    if path is None:
        message = f"{program} (GNU gettext) is not installed"
        if REQUIRES_SERVICES:
            pytest.fail(f"TEXTFLOW_REQUIRE_SERVICES=1 but {message}")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Entry]:
    """The messages ``makemessages`` extracts from the package now: its ``django.pot``,
    made in a copy of the package, so the shipped catalogs stay untouched."""
    _need("xgettext")
    _need("msgmerge")
    copy = tmp_path_factory.mktemp("messages") / PACKAGE.name
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "locale"))
    (copy / "locale").mkdir()
    cwd = os.getcwd()
    os.chdir(copy)  # makemessages reads the tree it is run in
    try:
        call_command(
            "makemessages", locale=["en"], keep_pot=True, verbosity=0, **MAKEMESSAGES_OPTIONS
        )
    finally:
        os.chdir(cwd)
    return read_po(copy / "locale" / "django.pot")


def test_the_promised_languages_ship() -> None:
    assert PROMISED <= set(LANGUAGES)
    for language in LANGUAGES:
        assert catalog_path(language).is_file()
        assert catalog_path(language).with_suffix(".mo").is_file()


def test_the_reference_holds_the_package_messages(fresh: dict[tuple[str, str], Entry]) -> None:
    """The extraction found the package's messages (an empty reference would pass anything):
    a Python one, a plural, a template's and a contextual one."""
    assert ("", "The code is not valid.") in fresh
    assert fresh["", "%(count)d attempt left."].msgid_plural == "%(count)d attempts left."
    assert ("", "Traffic insights") in fresh  # admin.py and the change list's template
    assert ("", "No block is in force.") in fresh  # the insights template only
    assert ("phone verification", "verified") in fresh


def _problems(language: str, fresh: dict[tuple[str, str], Entry]) -> list[str]:
    catalog = read_po(catalog_path(language))
    forms = plural_count(catalog)
    problems = []
    if "fuzzy" in catalog[HEADER].flags:
        problems.append("the header is fuzzy")
    for key, wanted in fresh.items():
        if key == HEADER:
            continue
        name = f"{key[0]}|{key[1]}" if key[0] else key[1]
        entry = catalog.get(key)
        if entry is None or entry.obsolete:
            problems.append(f"missing: {name!r}")
        elif "fuzzy" in entry.flags:
            problems.append(f"fuzzy: {name!r}")
        elif entry.msgid_plural != wanted.msgid_plural:
            problems.append(f"plural changed: {name!r}")
        elif len(entry.msgstr) != (forms if wanted.msgid_plural else 1):
            problems.append(f"{len(entry.msgstr)} forms instead of {forms}: {name!r}")
        elif not all(entry.msgstr):
            problems.append(f"untranslated: {name!r}")
    for key, entry in catalog.items():
        if key not in fresh or entry.obsolete:
            problems.append(f"no longer in the package: {key[1]!r}")
    return problems


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_message_is_translated(language: str, fresh: dict[tuple[str, str], Entry]) -> None:
    """Each message of the package is translated (every plural form), none is fuzzy, and
    the catalog keeps no message the package dropped."""
    problems = _problems(language, fresh)
    assert not problems, (
        f"{catalog_path(language).relative_to(PACKAGE.parent)} is out of date with the "
        "package's messages: run `make messages`, translate, and run it again.\n  "
        + "\n  ".join(problems)
    )


@pytest.mark.parametrize("language", LANGUAGES)
def test_catalog_names_no_absolute_path(language: str) -> None:
    """References are relative to the package (a regeneration elsewhere changes nothing)."""
    text = catalog_path(language).read_text(encoding="utf-8")
    references = [line for line in text.splitlines() if line.startswith("#:")]
    assert references, "the catalog has no references: made with --no-location?"
    paths = [path for line in references for path in line[2:].split()]
    assert not [path for path in paths if path.startswith("/") or ":" in path]


@pytest.mark.parametrize("language", LANGUAGES)
def test_compiled_catalog_is_up_to_date(language: str, tmp_path: Path) -> None:
    """``django.mo`` is ``django.po`` compiled now, and ``msgfmt --check`` accepts the
    catalog (every translation keeps its placeholders, the header is complete)."""
    msgfmt = _need("msgfmt")
    source = catalog_path(language)
    compiled = tmp_path / "django.mo"
    result = subprocess.run(
        [msgfmt, "--check", "-o", str(compiled), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    shipped = source.with_suffix(".mo")
    with compiled.open("rb") as now, shipped.open("rb") as then:
        # What gettext reads of each (the catalog includes the header).
        assert catalog_of(then) == catalog_of(now), (
            f"{shipped.relative_to(PACKAGE.parent)} is stale: run `make messages`"
        )


def catalog_of(mo: IO[bytes]) -> dict[Any, str]:
    """The messages of a compiled catalog, as gettext reads them."""
    return dict(gettext.GNUTranslations(mo)._catalog)  # type: ignore[attr-defined]


# -- the API in the request's language --------------------------------------------------------


@pytest.fixture
def localized(settings: Any) -> Iterator[APIClient]:
    """A project with ``LocaleMiddleware`` (after the session's, as Django asks) and the
    shipped languages among ``LANGUAGES`` (Django's default list has them all). The active
    language is put back afterwards: the middleware leaves the last request's one active."""
    middleware = list(settings.MIDDLEWARE)
    at = middleware.index("django.contrib.sessions.middleware.SessionMiddleware") + 1
    middleware.insert(at, "django.middleware.locale.LocaleMiddleware")
    settings.MIDDLEWARE = middleware
    settings.USE_I18N = True
    settings.LANGUAGE_CODE = "en-us"
    previous = translation.get_language()
    try:
        yield APIClient()
    finally:
        translation.activate(previous) if previous else translation.deactivate_all()


#: The API's answer to a code for a number with no live code, by Accept-Language.
INVALID_CODE = {
    "es": "El código no es válido.",
    "fr": "Le code n'est pas valide.",
    "de": "Der Code ist ungültig.",
    "pt-BR": "O código não é válido.",
    "it": "Il codice non è valido.",
    # Languages the package does not ship fall back to English...
    "nl": "The code is not valid.",
    "ja": "The code is not valid.",
    # ... a regional variant to its language...
    "es-MX": "El código no es válido.",
    "fr-CA": "Le code n'est pas valide.",
    # ... and so does a request that names no language.
    "": "The code is not valid.",
}


@pytest.mark.django_db
@pytest.mark.parametrize(("language", "detail"), INVALID_CODE.items())
def test_the_api_answers_in_the_request_language(
    localized: APIClient, language: str, detail: str
) -> None:
    headers: dict[str, Any] = {"HTTP_ACCEPT_LANGUAGE": language} if language else {}
    response = localized.post(
        "/api/phone/verify-code/",
        {"phone_number": "+12025550143", "code": "123456"},
        format="json",
        **headers,
    )
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid_code"
    assert body["detail"] == detail


#: A field error (the phone number's), by Accept-Language.
INVALID_NUMBER = {
    "es": "Introduzca un número de teléfono válido.",
    "fr": "Saisissez un numéro de téléphone valide.",
    "de": "Geben Sie eine gültige Telefonnummer ein.",
    "pt-BR": "Informe um número de telefone válido.",
    "it": "Inserisci un numero di telefono valido.",
    "nl": "Enter a valid phone number.",
}


@pytest.mark.django_db
@pytest.mark.parametrize(("language", "message"), INVALID_NUMBER.items())
def test_field_errors_are_in_the_request_language(
    localized: APIClient, language: str, message: str
) -> None:
    response = localized.post(
        "/api/phone/send-code/",
        {"phone_number": "+1 202"},
        format="json",
        HTTP_ACCEPT_LANGUAGE=language,
    )
    assert response.status_code == 400, response.content
    assert response.json() == {"phone_number": [message]}
    assert not locmem.outbox


#: The code SMS of "local" mode (SERVICE_NAME "Tests"), by Accept-Language.
CODE_SMS = {
    "es": "La clave para confirmar su teléfono en Tests es: ",
    "fr": "Votre code de vérification pour Tests est : ",
    "de": "Ihr Bestätigungscode für Tests lautet: ",
    "pt-BR": "A senha para confirmar seu telefone em Tests é: ",
    "it": "Il tuo codice di verifica per Tests è: ",
    "nl": "Your verification code for Tests is: ",
}


@pytest.mark.django_db
@pytest.mark.parametrize(("language", "opening"), CODE_SMS.items())
def test_local_mode_writes_the_sms_in_the_request_language(
    settings: Any, localized: APIClient, language: str, opening: str
) -> None:
    settings.TEXTFLOW = {**settings.TEXTFLOW, "VERIFY_MODE": "local"}
    response = localized.post(
        "/api/phone/send-code/",
        {"phone_number": "+12025550143"},
        format="json",
        HTTP_ACCEPT_LANGUAGE=language,
    )
    assert response.status_code == 200, response.content
    (sms,) = locmem.outbox
    assert re.fullmatch(re.escape(opening) + r"[0-9]{6}", sms.text), sms.text


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_code_sms_is_one_gsm_segment_in_every_language(settings: Any, language: str) -> None:
    """Every language's code SMS stays one GSM-7 segment with a long service name, the
    longest code and the WebOTP line (a character outside GSM-7, such as the "ó" of
    "código" or a no-break space, would make it UCS-2: 70 characters a segment)."""
    settings.TEXTFLOW = {
        **settings.TEXTFLOW,
        "SERVICE_NAME": "Example Store",
        "WEBOTP_DOMAIN": "www.example-store.com",
    }
    with translation.override(translation.to_language(language)):
        text = code_text("1234567890")
    parts = segments(text)
    assert (parts.encoding, parts.count) == ("GSM-7", 1), text


@pytest.mark.django_db
def test_textflow_mode_sends_textflow_own_text(settings: Any, localized: APIClient) -> None:
    """TextFlow writes its code SMS itself: the request's language does not reach it."""
    settings.TEXTFLOW = {**settings.TEXTFLOW, "VERIFY_MODE": "textflow"}
    response = localized.post(
        "/api/phone/send-code/",
        {"phone_number": "+12025550143"},
        format="json",
        HTTP_ACCEPT_LANGUAGE="es",
    )
    assert response.status_code == 200, response.content
    (sms,) = locmem.outbox
    assert sms.text.startswith("Your verification code for Tests is: "), sms.text
