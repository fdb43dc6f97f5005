"""textflow_django.phone: what is accepted, what is refused and with which code, country rules."""

from __future__ import annotations

import copy
import pickle

import phonenumbers
import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings
from phonenumbers import PhoneNumberType

from textflow_django import phone
from textflow_django._e164 import is_e164
from textflow_django.phone import (
    ERROR_MESSAGES,
    CountryNotAllowedError,
    InvalidPhoneNumberError,
    PhoneNumber,
    check_country,
    is_valid,
    normalize,
    parse,
)

ACCEPTED = [
    ("+12025550143", "+12025550143"),
    ("+1 (202) 555-0143", "+12025550143"),
    ("+1 202 555 0143", "+12025550143"),
    ("+1.202.555.0143", "+12025550143"),
    ("+1-202-555-0143", "+12025550143"),
    ("  +12025550143\t", "+12025550143"),
    ("+1\u00a0202\u00a0555\u00a00143", "+12025550143"),  # no-break spaces (copy-paste)
    ("+1 202\u2013555\u20130143", "+12025550143"),  # en dashes
    ("+14165550143", "+14165550143"),  # Canada shares +1
    ("+44 20 7946 0958", "+442079460958"),
    ("+44 (0)20 7946 0958", "+442079460958"),  # UK trunk zero in brackets
    ("+4402079460958", "+442079460958"),  # ...or not, in E.164 shape
    ("(+44) 20 7946 0958", "+442079460958"),
    ("+44 7400 123456", "+447400123456"),
    ("+33 6 12 34 56 78", "+33612345678"),
    ("+39 02 1234 5678", "+390212345678"),  # Italian leading zero is significant
    ("+49 30/12345678", "+493012345678"),
    ("+49 1512 3456789", "+4915123456789"),
    ("+61 412 345 678", "+61412345678"),
    ("+55 11 96123-4567", "+5511961234567"),
    ("+81 90-1234-5678", "+819012345678"),
    ("+1 800 234 5678", "+18002345678"),  # toll-free: can receive SMS, not premium
]


@pytest.mark.parametrize(("value", "expected"), ACCEPTED)
def test_accepted_formats_normalise_to_e164(value: str, expected: str) -> None:
    assert normalize(value) == expected
    assert is_valid(value)


@pytest.mark.parametrize(("value", "expected"), ACCEPTED)
def test_normalize_is_idempotent(value: str, expected: str) -> None:
    once = normalize(value)
    assert normalize(once) == once == expected
    assert normalize(parse(value)) == once


@pytest.mark.parametrize(
    ("value", "region", "expected"),
    [
        ("(202) 555-0143", "US", "+12025550143"),
        ("202-555-0143", "us", "+12025550143"),
        ("1 202 555 0143", "US", "+12025550143"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("06 12 34 56 78", "FR", "+33612345678"),
        ("+44 20 7946 0958", "US", "+442079460958"),  # a "+" number ignores the region
    ],
)
def test_national_format_with_region(value: str, region: str, expected: str) -> None:
    assert normalize(value, region=region) == expected


def test_national_format_without_any_region_says_to_add_the_country_code() -> None:
    with pytest.raises(InvalidPhoneNumberError) as exc:
        normalize("(202) 555-0143")
    assert exc.value.code == "no_country_code"
    assert exc.value.messages == [
        "Enter the number with + and the country code, e.g. +1 202 555 0143."
    ]


def test_default_region_is_read_at_call_time() -> None:
    with override_settings(TEXTFLOW={"DEFAULT_REGION": "US"}):
        assert normalize("(202) 555-0143") == "+12025550143"
        # An explicit region wins over the setting.
        assert normalize("020 7946 0958", region="GB") == "+442079460958"
    with override_settings(TEXTFLOW={"DEFAULT_REGION": "gb"}):
        assert normalize("020 7946 0958") == "+442079460958"
    assert not is_valid("(202) 555-0143")


REFUSED = [
    # Empty.
    (None, "empty"),
    ("", "empty"),
    ("   ", "empty"),
    # Not a string: JSON can send all of these.
    (12025550143, "invalid"),
    (1.5, "invalid"),
    (True, "invalid"),
    (False, "invalid"),
    ([], "invalid"),
    (["+12025550143"], "invalid"),
    ({"phone": "+12025550143"}, "invalid"),
    (b"+12025550143", "invalid"),
    # Letters (phonenumbers alone would read vanity numbers).
    ("+1 202 CALL NOW", "invalid"),
    ("+1 800 FLOWERS", "invalid"),
    ("+1 202 555 O143", "invalid"),  # letter O
    ("tel:+1-202-555-0143", "invalid"),
    # Too short.
    ("+1", "invalid"),
    ("+1 202", "invalid"),
    ("+44 20 7946 095", "invalid"),
    # Too long: 16 digits; more than 64 characters even if the number inside is fine.
    ("+1202555014312345", "invalid"),
    ("+1 202 555 0143 1234 5678", "invalid"),
    ("+12025550143" + " " * 60, "invalid"),
    # Non-ASCII digits: Arabic-Indic, Eastern Arabic-Indic, full-width, Devanagari, mixed.
    ("+\u0661\u0662\u0660\u0662\u0665\u0665\u0665\u0660\u0661\u0664\u0663", "invalid"),
    ("+\u06f1\u06f2\u06f0\u06f2\u06f5\u06f5\u06f5\u06f0\u06f1\u06f4\u06f3", "invalid"),
    ("\uff0b\uff11\uff12\uff10\uff12\uff15\uff15\uff15\uff10\uff11\uff14\uff13", "invalid"),
    ("+\uff11\uff12\uff10\uff12\uff15\uff15\uff15\uff10\uff11\uff14\uff13", "invalid"),
    ("+\u0967\u0968\u0966\u0968\u096b\u096b\u096b\u0966\u0967\u096a\u0969", "invalid"),
    ("+120255501\uff14\uff13", "invalid"),
    # Not valid numbers.
    ("+1 123 456 7890", "invalid"),  # no NANP area code starts with 1
    ("+999 1234567", "invalid"),  # no such country code
    ("+0 1234567", "invalid"),
    ("++12025550143", "invalid"),
    ("+1 202 555 0143 / 0144", "invalid"),  # two numbers
    # National format, and no region to read it in: the message says to add + and the code.
    ("2025550143", "no_country_code"),
    ("(202) 555-0143", "no_country_code"),
    # Extensions.
    ("+1 202 555 0143 ext. 12", "extension"),
    ("+1 202 555 0143 ext 12", "extension"),
    ("+1 202 555 0143 extension 12", "extension"),
    ("+1 202 555 0143 x12", "extension"),
    ("+12025550143x12", "extension"),
    ("+1 202 555 0143;ext=12", "extension"),
    ("+12025550143#12", "extension"),
    ("+12025550143,12", "extension"),
]


@pytest.mark.parametrize(("value", "code"), REFUSED)
def test_refused_with_code(value: object, code: str) -> None:
    with pytest.raises(InvalidPhoneNumberError) as exc:
        normalize(value)
    assert exc.value.code == code
    assert exc.value.messages == [str(ERROR_MESSAGES[code])]
    assert not is_valid(value)


# Real numbers from phonenumbers' own metadata examples; the type is asserted below so the
# table cannot drift from what phonenumbers says.
SPECIAL_RATE = [
    ("+44 909 8790000", PhoneNumberType.PREMIUM_RATE),  # UK premium rate
    ("+44 901 234 5678", PhoneNumberType.PREMIUM_RATE),
    ("+1 900 234 5678", PhoneNumberType.PREMIUM_RATE),  # US 900
    ("+49 900 1 234567", PhoneNumberType.PREMIUM_RATE),
    ("+33 8 84 01 23 45", PhoneNumberType.SHARED_COST),
    ("+33 8 10 12 34 56", PhoneNumberType.SHARED_COST),
    ("+44 55 1234 5678", PhoneNumberType.UAN),
    ("+49 177 991234567", PhoneNumberType.VOICEMAIL),
    ("+44 70 1234 5678", PhoneNumberType.PERSONAL_NUMBER),  # UK 070 "follow-me"
    ("+979 123456789", PhoneNumberType.PREMIUM_RATE),  # international premium rate
    ("+808 12345678", PhoneNumberType.SHARED_COST),  # international shared cost
]


@pytest.mark.parametrize(("value", "number_type"), SPECIAL_RATE)
def test_special_rate_numbers_are_refused_as_premium(value: str, number_type: int) -> None:
    numobj = phonenumbers.parse(value, None)
    assert phonenumbers.is_valid_number(numobj)
    assert phonenumbers.number_type(numobj) == number_type
    with pytest.raises(InvalidPhoneNumberError) as exc:
        normalize(value, check_countries=False)
    assert exc.value.code == "premium"


@pytest.mark.parametrize("value", ["+800 1234 5678", "+870 301234567", "+881 612345678"])
def test_non_geographic_numbers_are_refused(value: str) -> None:
    assert phonenumbers.is_valid_number(phonenumbers.parse(value, None))
    with pytest.raises(InvalidPhoneNumberError) as exc:
        normalize(value)
    assert exc.value.code == "premium"


@pytest.mark.parametrize(
    "value",
    ["+44 909 8790000", "+1 202 CALL NOW", "+1 202 555 0143 ext. 12", "+1 123 456 7890"],
)
def test_messages_never_echo_the_input(value: str) -> None:
    with pytest.raises(InvalidPhoneNumberError) as exc:
        normalize(value)
    text = " ".join(exc.value.messages) + str(exc.value)
    assert not any(ch.isdigit() for ch in text)
    assert "CALL" not in text


def test_errors_are_validation_errors_and_survive_pickle_and_copy() -> None:
    err = InvalidPhoneNumberError(code="premium")
    assert isinstance(err, ValidationError)
    # Our own bytes, round-tripped: not untrusted data.
    clones = [pickle.loads(pickle.dumps(err)), copy.copy(err), copy.deepcopy(err)]  # noqa: S301
    for clone in clones:
        assert isinstance(clone, InvalidPhoneNumberError)
        assert clone.code == "premium"
    country = pickle.loads(pickle.dumps(CountryNotAllowedError(params={"region": "GB"})))  # noqa: S301
    assert isinstance(country, CountryNotAllowedError)
    assert (country.code, country.region) == ("country_not_allowed", "GB")


def test_parse_returns_details() -> None:
    number = parse("+1 (202) 555-0143")
    assert isinstance(number, PhoneNumber)
    assert (number.e164, number.region, number.country_code) == ("+12025550143", "US", 1)
    assert str(number) == "+12025550143"
    assert number.national == "(202) 555-0143"
    assert number.international == "+1 202-555-0143"
    assert parse("+44 7400 123456").number_type == PhoneNumberType.MOBILE
    assert parse("+39 02 1234 5678").national == "02 1234 5678"
    with pytest.raises(AttributeError):
        number.e164 = "+1"  # type: ignore[misc]


# Country rules.


@override_settings(TEXTFLOW={"ALLOWED_COUNTRIES": ["US", "ca"]})
def test_allowed_countries() -> None:
    assert normalize("+1 202 555 0143") == "+12025550143"
    assert normalize("+1 416 555 0143") == "+14165550143"
    with pytest.raises(CountryNotAllowedError) as exc:
        normalize("+44 20 7946 0958")
    assert exc.value.code == "country_not_allowed"
    assert exc.value.region == "GB"
    assert isinstance(exc.value, InvalidPhoneNumberError)
    assert not is_valid("+44 20 7946 0958")
    # Rules off: the number is fine.
    assert normalize("+44 20 7946 0958", check_countries=False) == "+442079460958"
    assert is_valid("+44 20 7946 0958", check_countries=False)


@override_settings(TEXTFLOW={"BLOCKED_COUNTRIES": ["gb"]})
def test_blocked_countries() -> None:
    assert normalize("+12025550143") == "+12025550143"
    with pytest.raises(CountryNotAllowedError):
        normalize("+447400123456")
    assert normalize("+447400123456", check_countries=False) == "+447400123456"


@override_settings(TEXTFLOW={"ALLOWED_COUNTRIES": ["US", "GB"], "BLOCKED_COUNTRIES": ["GB"]})
def test_blocked_wins_over_allowed() -> None:
    assert check_country("+12025550143") == "US"
    with pytest.raises(CountryNotAllowedError):
        check_country("+442079460958")


@override_settings(TEXTFLOW={"ALLOWED_COUNTRIES": []})
def test_empty_allowed_list_allows_nothing() -> None:
    with pytest.raises(CountryNotAllowedError):
        normalize("+12025550143")


def test_country_rules_are_read_at_call_time() -> None:
    assert check_country("+442079460958") == "GB"
    with override_settings(TEXTFLOW={"ALLOWED_COUNTRIES": ["FR"]}):
        with pytest.raises(CountryNotAllowedError):
            check_country("+442079460958")
        assert check_country("+33612345678") == "FR"
    assert normalize("+442079460958") == "+442079460958"


@pytest.mark.parametrize("value", ["+1", "12025550143", "+1 202 555 0143", "+11234567890"])
def test_check_country_wants_a_valid_e164(value: str) -> None:
    with pytest.raises(InvalidPhoneNumberError) as exc:
        check_country(value)
    assert not isinstance(exc.value, CountryNotAllowedError)
    assert exc.value.code == "invalid"


def test_premium_is_refused_even_in_an_allowed_country() -> None:
    with override_settings(TEXTFLOW={"ALLOWED_COUNTRIES": ["GB"]}):
        with pytest.raises(InvalidPhoneNumberError) as exc:
            normalize("+44 909 8790000")
    assert exc.value.code == "premium"


# The E.164 fast path.


def test_fast_path_agrees_with_phonenumbers_on_every_example_number() -> None:
    """The shortcut for E.164 input must give phonenumbers' own answer for every region."""
    types = [
        PhoneNumberType.FIXED_LINE,
        PhoneNumberType.MOBILE,
        PhoneNumberType.TOLL_FREE,
        PhoneNumberType.PREMIUM_RATE,
        PhoneNumberType.SHARED_COST,
        PhoneNumberType.VOIP,
        PhoneNumberType.PERSONAL_NUMBER,
        PhoneNumberType.PAGER,
        PhoneNumberType.UAN,
        PhoneNumberType.VOICEMAIL,
    ]
    examples = [
        phonenumbers.example_number_for_type(region, number_type)
        for region in sorted(phonenumbers.SUPPORTED_REGIONS)
        for number_type in types
    ]
    checked = 0
    for numobj in examples:
        if numobj is None:
            continue
        e164 = phonenumbers.format_number(numobj, phonenumbers.PhoneNumberFormat.E164)
        reference = phonenumbers.parse(e164, None)
        expected_ok = phonenumbers.is_valid_number(reference) and is_e164(e164)
        classified = phone._classify_e164(e164)
        assert (classified is not None) == expected_ok, e164
        if classified is not None:
            assert classified.e164 == e164
            assert classified.region == phonenumbers.region_code_for_number(reference)
            assert classified.number_type == phonenumbers.number_type(reference)
        checked += 1
    assert checked > 1000


def test_classification_cache_is_bounded() -> None:
    maxsize = phone._classify_e164.cache_info().maxsize
    assert maxsize is not None and maxsize <= 10_000


def test_bulk_fast_path_sends_impossible_numbers_to_phonenumbers() -> None:
    """E.164-shaped but impossible: a length no region of the code allows, or a North
    American area code or exchange no plan issues. The fast path lets phonenumbers judge
    them (and refuse them) instead of passing them on."""
    fast = phone.bulk_normalizer()
    for bad in ("+10000000000", "+12021555014", "+1202555014", "+4474001234567890"):
        with pytest.raises(InvalidPhoneNumberError):
            fast(bad)
    assert fast("+12025550143") == "+12025550143"


def test_bulk_fast_path_keeps_every_valid_example_number_fast(monkeypatch) -> None:
    """Every valid fixed-line and mobile example number passes the fast path's own tests,
    with no fallback to phonenumbers: the length and NANP tests cost valid lists nothing."""
    fast = phone.bulk_normalizer()

    def fell_back(*args: object, **kwargs: object) -> str:
        pytest.fail(f"the fast path fell back to phonenumbers for {args[0]!r}")

    monkeypatch.setattr(phone, "normalize", fell_back)
    checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for number_type in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE):
            numobj = phonenumbers.example_number_for_type(region, number_type)
            if numobj is None or not phonenumbers.is_valid_number(numobj):
                continue
            e164 = phonenumbers.format_number(numobj, phonenumbers.PhoneNumberFormat.E164)
            assert fast(e164) == e164
            checked += 1
    assert checked > 300


def _same_answer(value: str) -> tuple[str, str]:
    """What normalize() answers for ``value``: ("ok", the E.164) or ("refused", the code)."""
    try:
        return "ok", normalize(value)
    except InvalidPhoneNumberError as err:
        return "refused", err.code


def _fast_answer(fast, value: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    try:
        return "ok", fast(value)
    except InvalidPhoneNumberError as err:
        return "refused", err.code


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("+19005550143", "premium"),  # US premium rate (900): the finding
        ("+19765550143", "invalid"),  # 976 is no area code
        ("+12112345678", "invalid"),  # 211 is a service code
        ("+15002345678", "premium"),  # a NANP personal-number range (500)
        ("+449098790000", "premium"),  # UK premium rate
        ("+447012345678", "premium"),  # UK 070 "follow-me"
        ("+493012", "invalid"),  # a German length, but no such range
        ("+80012345678", "premium"),  # non-geographic
    ],
)
def test_bulk_fast_path_refuses_what_full_validation_refuses(value: str, code: str) -> None:
    assert _same_answer(value) == ("refused", code)
    assert _fast_answer(phone.bulk_normalizer(), value) == ("refused", code)


def test_bulk_fast_path_answers_as_normalize_on_every_example_number() -> None:
    """Every example number phonenumbers has, of every type and region, valid or not:
    the fast path gives normalize()'s answer, value and refusal code alike."""
    fast = phone.bulk_normalizer()
    checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for number_type in range(12):
            numobj = phonenumbers.example_number_for_type(region, number_type)
            if numobj is None:
                continue
            e164 = phonenumbers.format_number(numobj, phonenumbers.PhoneNumberFormat.E164)
            assert _fast_answer(fast, e164) == _same_answer(e164), e164
            checked += 1
    assert checked > 1300


def test_bulk_fast_path_answers_as_normalize_on_random_numbers() -> None:
    """Random national numbers of every length a calling code allows, and near misses
    (a digit more or less): the fast path and full validation agree on each."""
    import random

    rng = random.Random(1143)  # fixed: a failure names its number and replays
    codes = phone._calling_codes_by_prefix()
    fast = phone.bulk_normalizer()
    checked = 0
    for digits, code in sorted(codes.items()):
        lengths = sorted(
            code.lengths | {min(code.lengths, default=7) - 1, max(code.lengths, default=7) + 1}
        )
        for length in lengths:
            for _ in range(6):
                national = "".join(rng.choice("0123456789") for _ in range(max(length, 1)))
                value = f"+{digits}{national}"
                assert _fast_answer(fast, value) == _same_answer(value), value
                checked += 1
    # The North American plan, which most bulk lists are: every area code, random lines.
    for area in range(200, 1000):
        value = f"+1{area}{rng.randrange(2, 10)}{rng.randrange(10**6):06d}"
        assert _fast_answer(fast, value) == _same_answer(value), value
        checked += 1
    # Near valid numbers, where ranges end: example numbers with their last 1 to 6 digits
    # redrawn (about half of them stay valid).
    examples = [
        phonenumbers.format_number(numobj, phonenumbers.PhoneNumberFormat.E164)
        for region in sorted(phonenumbers.SUPPORTED_REGIONS)
        for number_type in range(12)
        if (numobj := phonenumbers.example_number_for_type(region, number_type)) is not None
    ]
    valid = 0
    for _ in range(5000):
        example = rng.choice(examples)
        redrawn = rng.randint(1, 6)
        value = example[:-redrawn] + "".join(rng.choice("0123456789") for _ in range(redrawn))
        answer = _same_answer(value)
        assert _fast_answer(fast, value) == answer, value
        valid += answer[0] == "ok"
        checked += 1
    assert checked > 8000 and valid > 1500


@override_settings(TEXTFLOW={"ALLOWED_COUNTRIES": ["CA", "JM"], "BLOCKED_COUNTRIES": ["GB"]})
def test_bulk_fast_path_knows_the_region_of_a_shared_calling_code() -> None:
    fast = phone.bulk_normalizer()
    assert fast("+14165550143") == "+14165550143"  # Canada, +1
    assert fast("+18762345678") == "+18762345678"  # Jamaica, +1 876
    for value in ("+12025550143", "+447400123456", "+33612345678"):
        assert (
            _fast_answer(fast, value) == _same_answer(value) == ("refused", "country_not_allowed")
        )


# Masks.

MASKED = [
    ("+12025550143", "+1********43"),
    ("+447400123456", "+44********56"),
    ("+6907191", "+690**91"),  # the short number: the old mask showed "+6907***91"
    ("+1 (202) 555-0143", "+1********43"),
    ("+999123456", "*******56"),  # no such calling code: none is shown
    ("2025550143", "********43"),
    ("+690719", "+690***"),  # too short to show two digits and hide two
    ("123", "***"),
    ("+1", "+1"),
    ("", "***"),
    ("not a number", "***"),
    (None, "***"),
    (12025550143, "***"),
    ("+1" + "9" * 5000, "+1" + "*" * 15 + "99"),
    ("\udcff+12025550143\x00", "*********43"),  # junk before the "+": no calling code
]


@pytest.mark.parametrize(("value", "expected"), MASKED)
def test_mask_keeps_the_calling_code_and_two_digits(value: object, expected: str) -> None:
    assert phone.mask(value) == expected


def test_mask_of_a_phone_number_object() -> None:
    assert phone.mask(parse("+12025550143")) == "+1********43"


def _leaks(mask_rule) -> list[str]:  # type: ignore[no-untyped-def]
    """The example numbers (every region, fixed line and mobile, so short numbers too)
    whose mask under ``mask_rule`` shows a digit beyond the calling code and the national
    number's last two (none at all when the national number has fewer than four)."""
    leaked = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for number_type in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE):
            numobj = phonenumbers.example_number_for_type(region, number_type)
            if numobj is None:
                continue
            e164 = phonenumbers.format_number(numobj, phonenumbers.PhoneNumberFormat.E164)
            national = phonenumbers.national_significant_number(numobj)
            visible = "".join(ch for ch in mask_rule(e164) if ch.isdigit())
            kept = national[-2:] if len(national) >= 4 else ""
            if visible != f"{numobj.country_code}{kept}":
                leaked.append(e164)
    return leaked


def test_mask_shows_no_digit_but_the_calling_code_and_the_last_two() -> None:
    assert _leaks(phone.mask) == []


def test_the_leak_test_fails_the_old_mask_rule() -> None:
    """The rule logs used before (issue 11, finding 10) fails the test above: it showed
    the first digits after "+", so a short number's third digit (``+6907***91``)."""

    def old_rule(number: str) -> str:
        return number[:5] + "***" + number[-2:]

    leaked = _leaks(old_rule)
    assert "+6907290" in leaked  # Tokelau's mobile example: "+6907***90"
    assert len(leaked) > 200
