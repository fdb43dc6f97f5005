"""TextFlow's country names, by calling code: what ``/send-sms`` reports as ``country_code``.

TextFlow's own table, kept by the emulator on purpose (it stands for TextFlow): it is not
the app's calling-code table, so the client is tested against what the service says.
"""

from __future__ import annotations

from typing import Final

__all__ = ["country_name"]

# Country calling codes are prefix-free, so looking up the first 1, 2 and 3 digits finds at
# most one entry. Names, as the current TextFlow docs return them (``"Serbia"``).
_COUNTRIES: Final[dict[str, str]] = {
    "1": "United States",
    "7": "Russia",
    "20": "Egypt",
    "27": "South Africa",
    "30": "Greece",
    "31": "Netherlands",
    "32": "Belgium",
    "33": "France",
    "34": "Spain",
    "36": "Hungary",
    "39": "Italy",
    "40": "Romania",
    "41": "Switzerland",
    "43": "Austria",
    "44": "United Kingdom",
    "45": "Denmark",
    "46": "Sweden",
    "47": "Norway",
    "48": "Poland",
    "49": "Germany",
    "52": "Mexico",
    "55": "Brazil",
    "61": "Australia",
    "62": "Indonesia",
    "63": "Philippines",
    "64": "New Zealand",
    "65": "Singapore",
    "81": "Japan",
    "82": "South Korea",
    "86": "China",
    "90": "Turkey",
    "91": "India",
    "234": "Nigeria",
    "351": "Portugal",
    "353": "Ireland",
    "358": "Finland",
    "359": "Bulgaria",
    "380": "Ukraine",
    "381": "Serbia",
    "382": "Montenegro",
    "385": "Croatia",
    "386": "Slovenia",
    "387": "Bosnia and Herzegovina",
    "389": "North Macedonia",
    "420": "Czech Republic",
    "971": "United Arab Emirates",
    "972": "Israel",
}


def country_name(number: str) -> str:
    """TextFlow's name for the country of E.164 ``number`` (``"Unknown"`` if not listed)."""
    digits = number[1:4]
    for size in (1, 2, 3):
        name = _COUNTRIES.get(digits[:size])
        if name is not None:
            return name
    return "Unknown"
