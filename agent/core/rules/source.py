"""Read YAML while remembering the line of every value, so errors can point at it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from agent.core.rules.errors import RulesError

KeyPath = tuple[str | int, ...]
MAX_NODES = 100_000
MAX_DEPTH = 64
_SECTIONS = {"schedules": "schedule", "lists": "list"}


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Only `true`/`false`/`null` are typed; everything else stays text.

    YAML 1.1 would read `+33612345678` as an int, `0612345670` as octal, `9:00` as 540
    and `no`/`on` as booleans: all wrong for phone numbers, DTMF, times and CRM values.
    """


_Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("merge", r"^(?:<<)$", "<"),
):
    _Loader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first))


@dataclass
class Document:
    """Parsed YAML data plus the line (1-based) of each key path."""

    source: str
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line(self, path: KeyPath) -> int | None:
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None

    def entry_name(self, path: KeyPath) -> str | None:
        """The `name:` of the top-level list entry a path is in (a rule, a criterion, a
        workflow), `#N` when it has none."""
        if len(path) < 2 or not isinstance(path[1], int):
            return None
        try:
            entry = self.data[path[0]][path[1]]
        except (TypeError, KeyError, IndexError):
            return None
        name = entry.get("name") if isinstance(entry, dict) else None
        return name if isinstance(name, str) and name else f"#{path[1] + 1}"

    def error(self, path: KeyPath, message: str) -> RulesError:
        """A RulesError pointing at `path`, prefixed with the schedule or list it is in."""
        if len(path) >= 2 and path[0] in _SECTIONS:
            message = f"{_SECTIONS[str(path[0])]} {path[1]!r}: {message}"
        elif path[:1] == ("default",):
            message = f"default: {message}"
        return RulesError(self.source, self.line(path), self.entry_name(path), message)

    def locate(self, loc: tuple[str | int, ...]) -> KeyPath:
        """The data path of a pydantic error location (union tags and `[key]` skipped)."""
        path: list[str | int] = []
        node = self.data
        for part in loc:
            if _has(node, part):
                node = node[part]
                path.append(part)
        return tuple(path)


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def read_yaml(text: str, source: str) -> Document:
    """Parse `text`; raise RulesError (with the line) on bad syntax or duplicate keys."""
    loader = _Loader(text)
    doc = Document(source, None)
    try:
        node = loader.get_single_node()
        if node is not None:
            builder = _Builder(loader, doc)
            doc.data = builder.build(node, ())
            if builder.duplicate is not None:
                path, key_line = builder.duplicate
                raise RulesError(source, key_line, doc.entry_name(path),
                                 f"duplicate key {path[-1]!r}")
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        raise RulesError(source, line, None, f"invalid YAML: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise RulesError(source, None, None, f"invalid YAML: {exc}") from exc
    finally:
        loader.dispose()
    return doc


class _Builder:
    def __init__(self, loader: Any, doc: Document) -> None:
        self.loader = loader
        self.doc = doc
        self.nodes = 0
        self.duplicate: tuple[KeyPath, int] | None = None

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES or len(path) > MAX_DEPTH:
            raise self.doc.error(path, "document too large or too deeply nested")
        self.doc.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.loader.construct_object(node)

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        self.loader.flatten_mapping(node)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise RulesError(self.doc.source, line, None, "a key must be plain text")
            key = str(key_node.value)
            if key in out and self.duplicate is None:
                self.duplicate = ((*path, key), line)
            self.doc.lines.setdefault((*path, key), line)
            out[key] = self.build(value_node, (*path, key))
        return out
