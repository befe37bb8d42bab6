"""Number lists (`lists:` section): exact numbers and `+prefix*` entries, normalized to E.164."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from agent.core.phones import normalize
from agent.core.rules.errors import RulesError

_SEPARATORS = re.compile(r"[\s.\-/()]")
_PREFIX = re.compile(r"\+\d{1,15}")


def parse_entry(text: str, region: str) -> tuple[str, bool]:
    """One list entry -> (E.164 number or `+prefix`, is_prefix); ValueError if unusable."""
    text = text.strip()
    if text.endswith("*"):
        prefix = _SEPARATORS.sub("", text[:-1])
        prefix = "+" + prefix[2:] if prefix.startswith("00") else prefix
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(f"bad prefix {text!r} (a prefix is international, e.g. +33899*)")
        return prefix, True
    number = normalize(text, region)
    if number is None:
        raise ValueError(f"invalid phone number {text!r}")
    return number, False


class NumberList:
    """A set of E.164 numbers plus prefixes; `number in lst` is a set lookup + startswith."""

    __slots__ = ("name", "numbers", "prefixes")

    def __init__(self, name: str, entries: Iterable[tuple[str, bool]]) -> None:
        pairs = list(entries)
        self.name = name
        self.numbers = frozenset(value for value, is_prefix in pairs if not is_prefix)
        self.prefixes = tuple(sorted({value for value, is_prefix in pairs if is_prefix}))

    def __contains__(self, number: object) -> bool:
        if not isinstance(number, str):
            return False
        return number in self.numbers or number.startswith(self.prefixes)

    def __len__(self) -> int:
        return len(self.numbers) + len(self.prefixes)


def read_list_file(path: Path, name: str, region: str) -> NumberList:
    """Read one number or `+prefix*` per line; `#` starts a comment; blank lines are skipped.

    OSError / UnicodeDecodeError propagate (the caller points at the `file:` reference);
    a bad line is a RulesError naming the list file and line.
    """
    text = path.read_text(encoding="utf-8-sig")
    entries: list[tuple[str, bool]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        try:
            entries.append(parse_entry(content, region))
        except ValueError as exc:
            raise RulesError(str(path), number, None, f"list {name!r}: {exc}") from None
    return NumberList(name, entries)


def caller_key(value: object, region: str) -> str | None:
    """The E.164 form of a caller number from the routing context (usually already E.164)."""
    if not isinstance(value, str):
        return None
    if value.startswith("+") and value[1:].isdigit():
        return value
    return normalize(value, region)
