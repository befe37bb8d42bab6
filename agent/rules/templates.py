"""`{field}` templates in destination targets and audio names, parsed once at load."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from agent.rules.conditions import MISSING, Context, Field, show

FIELD_NAME = re.compile(r"[\w-]+(?:\.[\w-]+)*", re.ASCII)
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_LITERAL = re.compile(r"[^\s\"'\\{}|,;&]*")
# A CRM value put into a target must not smuggle Dial() syntax (`&`, `,`, `/`) or AGI quoting.
_SAFE_VALUE = re.compile(r"[\w.+*#@-]+", re.ASCII)


def split_template(text: str) -> tuple[list[str], list[str]]:
    """`"ext-{owner.extension}"` -> (["ext-", ""], ["owner.extension"]); ValueError if bad."""
    literals: list[str] = []
    fields: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        literals.append(text[position : match.start()])
        fields.append(match[1].strip())
        position = match.end()
    literals.append(text[position:])
    for literal in literals:
        if "{" in literal or "}" in literal:
            raise ValueError(f"unbalanced brace in {text!r}")
        if not _LITERAL.fullmatch(literal):
            raise ValueError(f"{text!r} contains a space, quote or one of | , ; &")
    for name in fields:
        if not FIELD_NAME.fullmatch(name):
            raise ValueError(f"bad template field {{{name}}} in {text!r}")
    return literals, fields


class Template:
    """A string with `{field}` placeholders; renders to None (and why) when a field is unusable."""

    __slots__ = ("fields", "literals", "static")

    def __init__(self, literals: Sequence[str], fields: Sequence[Field]) -> None:
        self.literals = tuple(literals)
        self.fields = tuple(fields)
        self.static = self.literals[0] if not self.fields else None

    def render(self, ctx: Context) -> tuple[str | None, str]:
        if self.static is not None:
            return self.static, ""
        parts = [self.literals[0]]
        for field, literal in zip(self.fields, self.literals[1:], strict=True):
            name, value = field.get(ctx)
            if value is MISSING:
                return None, f"template field {name} is missing"
            text = _text(value)
            if not _SAFE_VALUE.fullmatch(text):
                return None, f"template field {name} has an unusable value {show(value)}"
            parts += (text, literal)
        return "".join(parts), ""


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
