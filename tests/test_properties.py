"""Property tests (Hypothesis): what holds for *every* input, not just the examples we thought of.

- ``phone.normalize`` is total over strings: any text either becomes a valid, accepted E.164
  number or is refused with ``InvalidPhoneNumberError`` (a stable code), never another
  exception; and it is idempotent.
- A code containing a non-ASCII digit is refused as a field error by the serializer and the
  form, and by ``verification.check_code`` as a wrong code, without asking TextFlow.
- ``PhoneNumberSerializerField`` raises nothing but DRF's ``ValidationError``, whatever JSON
  value it is given.

Each property runs a few hundred derandomised examples (reproducible in CI); the whole file
takes a few seconds. ``make fuzz`` runs it with the API fuzzing (``test_fuzz_api.py``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from typing import Any

import phonenumbers
import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from rest_framework import serializers

from textflow_django import phone, verification
from textflow_django.exceptions import InvalidCode
from textflow_django.fields import PhoneNumberSerializerField
from textflow_django.forms import VerifyCodeForm
from textflow_django.models import PhoneVerification, RateLimitCounter
from textflow_django.phone import ERROR_MESSAGES, InvalidPhoneNumberError
from textflow_django.serializers import SendCodeSerializer, VerifyCodeSerializer

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
ASCII_DIGITS = "0123456789"
NUMBER = "+12025550143"

#: Derandomised (the same examples on every run and in CI), no example database, no
#: deadline (a slow CI machine is not a failure); shrinking on, so a failure is minimal.
PROPERTY_SETTINGS = hsettings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# -- strategies ----------------------------------------------------------------------------


def _example_numbers() -> list[str]:
    """phonenumbers' example number of every region and type: real, valid shapes."""
    found: set[str] = set()
    regions = sorted(phonenumbers.SUPPORTED_REGIONS)
    for region in regions:
        for number_type in range(12):  # every PhoneNumberType but UNKNOWN (99)
            example = phonenumbers.example_number_for_type(region, number_type)
            if example is not None:
                found.add(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164))
    for calling_code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        example = phonenumbers.example_number_for_non_geo_entity(calling_code)
        if example is not None:
            found.add(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164))
    return sorted(found)


EXAMPLE_NUMBERS = _example_numbers()
US_GB_NUMBERS = [
    n
    for n in EXAMPLE_NUMBERS
    if phonenumbers.region_code_for_number(phonenumbers.parse(n)) in {"US", "GB"}
]

#: Characters people (and attackers) put in phone numbers: separators, look-alike dashes,
#: extension markers, letters phonenumbers would read as vanity digits, and digits that are
#: not ASCII (Arabic-Indic, Persian, Devanagari, full-width, superscript, Bengali, Thai...).
PHONE_NOISE = (
    "+ -().\u00a0\u2007\u202f/\u2010\u2011\u2012\u2013\u2014\u2015\u2212\t\n#;,*xXeEtT:="
    "\u0660\u0663\u06f5\u0967\uff10\uff13\u00b2\u09ea\u0e53\u1041\U0001d7ce\ufe63\uff0b"
)


@st.composite
def formatted_numbers(draw: st.DrawFn) -> str:
    """A real number written in one of phonenumbers' formats (E.164, international, national,
    RFC 3966, digits only), then lightly mangled (characters inserted, deleted or replaced)."""
    e164 = draw(st.sampled_from(EXAMPLE_NUMBERS))
    numobj = phonenumbers.parse(e164, None)
    style = draw(st.sampled_from(["e164", "international", "national", "rfc3966", "raw"]))
    if style == "international":
        text = phonenumbers.format_number(numobj, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    elif style == "national":
        text = phonenumbers.format_number(numobj, phonenumbers.PhoneNumberFormat.NATIONAL)
    elif style == "rfc3966":
        text = phonenumbers.format_number(numobj, phonenumbers.PhoneNumberFormat.RFC3966)
    elif style == "raw":
        text = e164.lstrip("+")
    else:
        text = e164
    for _ in range(draw(st.integers(0, 3))):
        chars = list(text)
        at = draw(st.integers(0, len(chars)))
        edit = draw(st.sampled_from(["insert", "delete", "replace"]))
        noise = draw(st.sampled_from(PHONE_NOISE + ASCII_DIGITS))
        if edit == "insert":
            chars.insert(at, noise)
        elif chars:
            at = min(at, len(chars) - 1)
            if edit == "delete":
                del chars[at]
            else:
                chars[at] = noise
        text = "".join(chars)
    padding = draw(st.sampled_from(["", " ", "\t", "\u3000", "\n"]))
    return padding + text + padding


phone_like_text = st.text(alphabet=PHONE_NOISE + ASCII_DIGITS, max_size=30)
any_string = st.one_of(
    st.text(),  # any Unicode but surrogates (which JSON and forms cannot carry)
    st.text(alphabet=st.characters(categories=["Nd", "Zs", "Pd", "Ps", "Pe"]), max_size=30),
    phone_like_text,
    formatted_numbers(),
    st.text(min_size=60, max_size=70).map(lambda s: "+" + s),  # around MAX_INPUT_LENGTH
    st.text(alphabet=ASCII_DIGITS + " ", min_size=50, max_size=5000).map(lambda s: "+" + s),
    st.sampled_from(EXAMPLE_NUMBERS),
)
regions = st.sampled_from([None, "US", "GB", "DE", "FR", "IN", "BR", "JP", "IT", "ZZ", "001", "us"])


def _is_non_ascii_digit(char: str) -> bool:
    return char.isdigit() and char not in ASCII_DIGITS


NON_ASCII_DIGITS = st.characters(categories=["Nd", "No"]).filter(_is_non_ascii_digit)


@st.composite
def codes_with_a_non_ascii_digit(draw: st.DrawFn) -> str:
    """4 to 10 characters that ``str.isdigit()`` calls digits, at least one of them not ASCII
    (``"١٢٣٤"``, ``"12３4"``, ``"²⁰²⁵"``...): what a user's keyboard or a copy-paste may give."""
    length = draw(st.integers(4, 10))
    chars = draw(
        st.lists(st.sampled_from(ASCII_DIGITS) | NON_ASCII_DIGITS, min_size=length, max_size=length)
    )
    chars[draw(st.integers(0, length - 1))] = draw(NON_ASCII_DIGITS)
    return "".join(chars)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | phone_like_text
    | formatted_numbers(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


# -- phone.normalize -----------------------------------------------------------------------


def _check_accepted(e164: str) -> None:
    assert E164.match(e164), e164
    numobj = phonenumbers.parse(e164, None)
    assert phonenumbers.is_valid_number(numobj), e164
    # Accepted means not one of the refused (premium / special-service) ranges either.
    assert (
        phonenumbers.region_code_for_number(numobj) != phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY
    )
    assert phonenumbers.number_type(numobj) not in phone.REFUSED_NUMBER_TYPES, e164


def test_normalize_is_total_and_idempotent() -> None:
    """For every string and region: normalize() returns a valid, accepted E.164 number that
    normalises to itself (with or without a region), or raises InvalidPhoneNumberError with
    one of the documented codes; nothing else ever escapes."""
    outcomes: Counter[str] = Counter()

    @hsettings(PROPERTY_SETTINGS, max_examples=1500)
    @given(text=any_string, region=regions)
    def prop(text: str, region: str | None) -> None:
        try:
            e164 = phone.normalize(text, region=region)
        except InvalidPhoneNumberError as err:
            assert err.code in ERROR_MESSAGES, err.code
            outcomes[err.code] += 1
            # A refusal never echoes the input: its message is the code's fixed text.
            assert err.messages == [str(ERROR_MESSAGES[err.code])]
            return
        outcomes["accepted"] += 1
        _check_accepted(e164)
        assert phone.normalize(e164) == e164
        assert phone.normalize(e164, region=region) == e164
        assert phone.is_valid(text, region=region)

    prop()
    # The strategies must reach both sides of the property, or it proves little.
    assert outcomes["accepted"] >= 100, outcomes
    assert outcomes["invalid"] >= 500, outcomes
    assert {"empty", "extension", "premium"} <= set(outcomes), outcomes


@PROPERTY_SETTINGS
@given(text=any_string, digit=NON_ASCII_DIGITS, at=st.integers(min_value=0))
def test_a_non_ascii_digit_anywhere_is_refused(text: str, digit: str, at: int) -> None:
    """Numbers are ASCII digits: a non-ASCII digit anywhere (phonenumbers would read it as
    the same digit) makes the whole input invalid."""
    at %= len(text) + 1
    value = text[:at] + digit + text[at:]
    with pytest.raises(InvalidPhoneNumberError):
        phone.normalize(value)
    with pytest.raises(InvalidPhoneNumberError):
        phone.normalize(value, region="US")


def test_every_example_number_of_an_accepted_type_is_accepted_in_every_format() -> None:
    """The other direction: a real number is not refused just because of how it is written."""
    accepted = 0
    for e164 in EXAMPLE_NUMBERS:
        numobj = phonenumbers.parse(e164, None)
        region = phonenumbers.region_code_for_number(numobj)
        if (
            region == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY
            or phonenumbers.number_type(numobj) in phone.REFUSED_NUMBER_TYPES
        ):
            continue
        international = phonenumbers.format_number(
            numobj, phonenumbers.PhoneNumberFormat.INTERNATIONAL
        )
        national = phonenumbers.format_number(numobj, phonenumbers.PhoneNumberFormat.NATIONAL)
        assert phone.normalize(e164) == e164
        assert phone.normalize(international) == e164, international
        assert phone.normalize(national, region=region) == e164, (national, region)
        accepted += 1
    assert accepted > 500


# -- codes with non-ASCII digits -----------------------------------------------------------


@PROPERTY_SETTINGS
@given(code=codes_with_a_non_ascii_digit())
def test_serializer_refuses_non_ascii_digits_in_codes(code: str) -> None:
    serializer = VerifyCodeSerializer(data={"phone_number": NUMBER, "code": code})
    assert not serializer.is_valid()
    assert set(serializer.errors) == {"code"}, serializer.errors
    assert [e.code for e in serializer.errors["code"]] == ["invalid"]


@PROPERTY_SETTINGS
@given(code=codes_with_a_non_ascii_digit())
def test_form_refuses_non_ascii_digits_in_codes(textflow_live: Any, code: str) -> None:
    form = VerifyCodeForm(data={"phone_number": NUMBER, "code": code})
    assert form.verify() is None
    assert form.error is None
    assert set(form.errors) == {"code"}, form.errors
    assert form.has_error("code", "invalid")
    assert textflow_live.request_counts == {}


@pytest.mark.django_db
@hsettings(PROPERTY_SETTINGS, max_examples=200)
@given(code=codes_with_a_non_ascii_digit())
def test_check_code_refuses_non_ascii_digits_without_asking_textflow(
    textflow_live: Any, code: str
) -> None:
    """Even called directly (no form, no serializer), the service treats such a code as a
    wrong code: an attempt is counted and TextFlow is not asked."""
    # A fresh pending verification for every example (the test's transaction is shared by
    # all examples, and wrong codes lock a verification after MAX_ATTEMPTS).
    PhoneVerification.objects.all().delete()
    RateLimitCounter.objects.all().delete()
    pending = PhoneVerification.objects.create(
        phone_number=NUMBER,
        mode=PhoneVerification.Mode.TEXTFLOW,
        expires_at=timezone.now() + dt.timedelta(minutes=10),
    )
    with pytest.raises(InvalidCode) as caught:
        verification.check_code(NUMBER, code)
    assert caught.value.attempts_left == 4
    pending.refresh_from_db()
    assert pending.attempts == 1
    assert pending.status == PhoneVerification.Status.PENDING
    assert textflow_live.calls("/verify-code") == []
    assert code not in repr(caught.value) and code not in str(caught.value.message)


# -- the serializer field, for any JSON value ----------------------------------------------


@pytest.mark.parametrize("allowed", [None, ["US", "GB"]], ids=["any-country", "US-GB-only"])
def test_phone_serializer_field_raises_only_validation_errors(settings: Any, allowed: Any) -> None:
    settings.TEXTFLOW = {**settings.TEXTFLOW, "ALLOWED_COUNTRIES": allowed}
    outcomes: Counter[str] = Counter()

    @PROPERTY_SETTINGS
    @given(value=st.one_of(json_values, formatted_numbers(), st.sampled_from(US_GB_NUMBERS)))
    def prop(value: Any) -> None:
        field = PhoneNumberSerializerField()
        result: str | None = None
        try:
            result = field.run_validation(value)
        except serializers.ValidationError as err:
            outcomes["refused"] += 1
            assert isinstance(err.detail, list) and err.detail, err.detail
            assert all(isinstance(d, str) for d in err.detail)
        else:
            outcomes["accepted"] += 1
            assert isinstance(value, str)
            assert isinstance(result, str)
            _check_accepted(result)
        # The same value through the API's serializers never raises either, and agrees with
        # the field (the serializers leave country rules to the service).
        serializer = SendCodeSerializer(data={"phone_number": value})
        if serializer.is_valid():
            assert allowed is not None or serializer.validated_data["phone_number"] == result
        else:
            assert set(serializer.errors) == {"phone_number"}
            assert result is None
        serializer = VerifyCodeSerializer(data={"phone_number": value, "code": value})
        assert not serializer.is_valid()  # no value is both a phone number and a code
        assert set(serializer.errors) <= {"phone_number", "code"}

    prop()
    assert outcomes["refused"] >= 100, outcomes
    assert outcomes["accepted"] >= 10, outcomes
