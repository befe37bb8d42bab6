"""`{field}` templates of every rules file, parsed and their fields resolved once at load:
routing destination targets and audio names (`extension:{owner.extension}`), workflow
values and task texts (`Rendez-vous {contact.name}`).

A placeholder is a field name in braces (spaces inside are ignored: `{ extension }`); a
brace outside a placeholder is an error, there is no literal brace. A value renders as its
text, stripped: a whole float without decimals (`201.0` -> `201`), a list joined with `, `.
A *target* (a PBX destination or sound name) is stricter: its literal text may hold no
space, quote or one of `| , ; &`, and a value that is a list or not plain (`[\\w.+*#@-]+`)
is unusable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from agent.core.rules.conditions import MISSING, Context, Field, show

FIELD_NAME = re.compile(r"[\w-]+(?:\.[\w-]+)*", re.ASCII)
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_TARGET_LITERAL = re.compile(r"[^\s\"'\\{}|,;&]*")
# A CRM value put into a target must not smuggle Dial() syntax (`&`, `,`, `/`) or AGI quoting.
_SAFE_VALUE = re.compile(r"[\w.+*#@-]+", re.ASCII)


def split_template(text: str, *, target: bool = True) -> tuple[list[str], list[str]]:
    """`"ext-{owner.extension}"` -> (["ext-", ""], ["owner.extension"]); ValueError if bad.
    `target`: the literal text must suit a PBX destination or sound name."""
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
        if target and not _TARGET_LITERAL.fullmatch(literal):
            raise ValueError(f"{text!r} contains a space, quote or one of | , ; &")
    for name in fields:
        if not FIELD_NAME.fullmatch(name):
            raise ValueError(f"bad template field {{{name}}} in {text!r}")
    return literals, fields


def compile_template(text: str, field_of: Callable[[str], Field], *,
                     target: bool = True) -> Template:
    """Parse `text` and resolve its fields with `field_of`; ValueError naming what is bad."""
    literals, names = split_template(text, target=target)
    return Template(literals, [field_of(name) for name in names], target=target)


class Template:
    """A string with `{field}` placeholders, compiled: literal parts and resolved fields."""

    __slots__ = ("fields", "literals", "static", "target")

    def __init__(self, literals: Sequence[str], fields: Sequence[Field], *,
                 target: bool = True) -> None:
        self.literals = tuple(literals)
        self.fields = tuple(fields)
        self.target = target
        self.static = self.literals[0] if not self.fields else None

    @property
    def source(self) -> str:
        """The template as written (without spaces inside the braces)."""
        parts = [self.literals[0]]
        for field, literal in zip(self.fields, self.literals[1:], strict=True):
            parts += ("{", field.name, "}", literal)
        return "".join(parts)

    def render(self, ctx: Context) -> tuple[str | None, str]:
        """The text, or None and why when a field is missing (or, in a target, unusable):
        a routing rule whose target cannot be filled does not match."""
        if self.static is not None:
            return self.static, ""
        parts = [self.literals[0]]
        for field, literal in zip(self.fields, self.literals[1:], strict=True):
            name, value = field.get(ctx)
            if value is MISSING:
                return None, f"template field {name} is missing"
            text = text_of(value)
            if self.target and not _usable(value, text):
                return None, f"template field {name} has an unusable value {show(value)}"
            parts += (text, literal)
        return "".join(parts), ""

    def fill(self, ctx: Context) -> str:
        """The text with missing (or, in a target, unusable) fields left empty, stripped:
        workflow values and task texts."""
        if self.static is not None:
            return self.static.strip()
        parts = [self.literals[0]]
        for field, literal in zip(self.fields, self.literals[1:], strict=True):
            _name, value = field.get(ctx)
            text = "" if value is MISSING else text_of(value)
            if self.target and not _usable(value, text):
                text = ""
            parts += (text, literal)
        return "".join(parts).strip()


def _usable(value: Any, text: str) -> bool:
    """Whether a value may go into a target: one plain value, never a list."""
    return not isinstance(value, list | tuple) and _SAFE_VALUE.fullmatch(text) is not None


def text_of(value: Any) -> str:
    """A field value as template text: `201.0` -> `201`, `["a", "b"]` -> `a, b`, stripped."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return ", ".join(text_of(v) for v in value)
    return str(value).strip()
