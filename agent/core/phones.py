"""Phone numbers: parse anything a PBX or a web form sends into E.164 (§2 of the spec).

Pure functions over `phonenumbers`; `normalize` is memoised in a bounded LRU cache, since
the same callers come back all day.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from phonenumbers import PhoneNumberFormat

WITHHELD = frozenset(
    {"", "anonymous", "unknown", "<unknown>", "restricted", "private", "unavailable",
     "withheld", "blocked", "none", "null", "s"}
)
_JUNK = re.compile(r"[\s.\-/()\[\]]")
_ALLOWED = re.compile(r"^\+?[0-9]+$")
MAX_DIGITS = 20


def is_withheld(raw: str | None) -> bool:
    """True for the caller IDs a PBX uses when the number is hidden or missing."""
    return raw is None or raw.strip().lower() in WITHHELD


@lru_cache(maxsize=65536)
def normalize(raw: str | None, region: str = "FR") -> str | None:
    """Return the E.164 form of `raw`, or None when it is withheld, garbage or invalid.

    Accepts `+` and `00` international prefixes, a national trunk prefix, separators
    (spaces, dots, dashes, parentheses, the French `(0)`), and digits-only international
    numbers such as `33612345678` when they are valid. Never raises.
    """
    if raw is None or is_withheld(raw):
        return None
    text = raw.strip().replace("(0)", "")
    compact = _JUNK.sub("", text)
    if not _ALLOWED.match(compact) or len(compact) > MAX_DIGITS + 1:
        return None
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    candidates = [compact] if compact.startswith("+") else [compact, "+" + compact]
    for candidate in candidates:
        number = _parse(candidate, region)
        if number is not None:
            return phonenumbers.format_number(number, PhoneNumberFormat.E164)
    return None


def _parse(text: str, region: str) -> phonenumbers.PhoneNumber | None:
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


def mask(value: str | None) -> str:
    """Mask a phone number (or any personal string) for logs: `+336****678`."""
    if not value:
        return ""
    if len(value) <= 4:
        return "*" * len(value)
    keep = 3 if len(value) > 8 else 1
    return value[: keep + 1] + "*" * (len(value) - 2 * keep - 1) + value[-keep:]
