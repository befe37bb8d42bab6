"""The shipped dialplan include, checked without a PBX (issue #12): every jump lands, every
branch ends, and it agrees with the sample rules. tests/pbx runs it on a real Asterisk."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import yaml

from agent.core.model import DestinationType

REPO = Path(__file__).parents[2]
INCLUDE = REPO / "dialplan" / "extensions_crm.conf"
SAMPLE_RULES = REPO / "rules" / "routing.yaml"
ENDINGS = {"Hangup", "Goto"}  # a step after which the dialplan never falls through


@dataclass
class Step:
    exten: str
    priority: int
    label: str | None
    app: str
    args: str


@dataclass
class Dialplan:
    globals: dict[str, str] = field(default_factory=dict)
    contexts: dict[str, list[Step]] = field(default_factory=dict)

    def extension(self, context: str, exten: str) -> list[Step]:
        """The steps of `exten` in `context`, matching patterns (`_X.`) as Asterisk does."""
        steps = self.contexts.get(context, [])
        exact = [s for s in steps if s.exten == exten]
        return exact or [s for s in steps if s.exten.startswith("_")
                         and pattern(s.exten).fullmatch(exten)]

    def lands(self, context: str, exten: str, where: str) -> bool:
        steps = self.extension(context, exten)
        return any(s.label == where or str(s.priority) == where for s in steps)


def pattern(exten: str) -> re.Pattern[str]:
    """An Asterisk extension pattern as a regex (`X`, `Z`, `N`, `[...]`, `.`, `!`)."""
    out, i, body = "", 0, exten[1:]
    while i < len(body):
        c = body[i]
        if c == "[":
            end = body.index("]", i)
            out += "[" + body[i + 1:end] + "]"
            i = end
        else:
            out += {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]", ".": ".+", "!": ".*"}.get(
                c, re.escape(c))
        i += 1
    return re.compile(out)


def parse(text: str) -> Dialplan:
    plan, context, last = Dialplan(), "", ("", 0)
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            context = line[1:-1]
            plan.contexts.setdefault(context, [])
            continue
        if context == "globals":
            name, _, value = line.partition("=")
            plan.globals[name.strip()] = value.strip()
            continue
        kind, _, rest = line.partition("=>")
        exten, priority, app_call = ([p.strip() for p in rest.split(",", 2)]
                                     if kind.strip() == "exten" else
                                     [last[0], *[p.strip() for p in rest.split(",", 1)]])
        number = 1 if priority == "1" else last[1] + 1
        label = None
        if "(" in priority:
            label = priority[priority.index("(") + 1:-1]
        app, _, args = app_call.partition("(")
        plan.contexts[context].append(Step(exten, number, label, app, args[:-1]))
        last = (exten, number)
    return plan


PLAN = parse(INCLUDE.read_text())
ROUTE_TYPES: tuple[str, ...] = get_args(DestinationType)
SAMPLE = yaml.safe_load(SAMPLE_RULES.read_text())
DESTINATIONS = [SAMPLE["default"]["destination"]] + [r["destination"] for r in SAMPLE["rules"]]


def sample_targets(kind: str) -> set[str]:
    return {d.split(":", 1)[1] for d in DESTINATIONS
            if d.startswith(kind + ":") and "{" not in d}


def expand(text: str) -> list[str]:
    """A jump target with the variables the agent sets, in every value they can take."""
    values = {"CRM_ROUTE_TYPE": ROUTE_TYPES, "CRM_IVR_CONTEXT": [PLAN.globals["CRM_IVR_CONTEXT"]],
              "CRM_ROUTE_TARGET": sorted(sample_targets("ivr"))}
    found = re.search(r"\$\{(\w+)\}", text)
    if not found:
        return [text]
    return [t for v in values[found[1]] for t in expand(text.replace(found[0], v, 1))]


def jumps() -> list[tuple[str, Step, str]]:
    """(context, step, target) of every Goto and GotoIf branch in the include."""
    out = []
    for context, steps in PLAN.contexts.items():
        for step in steps:
            if step.app == "Goto":
                out.append((context, step, step.args))
            elif step.app == "GotoIf":
                branches = step.args.rsplit("?", 1)[1]
                out += [(context, step, b) for b in branches.split(":") if b]
    return out


def test_every_jump_lands_on_an_existing_step() -> None:
    for context, step, target in jumps():
        for concrete in expand(target):
            parts = concrete.split(",")
            where = {1: (context, step.exten, parts[0]), 2: (context, *parts),
                     3: tuple(parts)}[len(parts)]
            assert PLAN.lands(*where), f"[{context}] {step.exten},{step.priority}: {concrete}"


def test_every_route_type_has_its_context() -> None:
    for route_type in ROUTE_TYPES:
        assert PLAN.extension(f"crm-route-{route_type}", "s"), route_type


def test_every_branch_ends_in_a_destination_or_a_hangup() -> None:
    for context, steps in PLAN.contexts.items():
        for exten in {s.exten for s in steps}:
            last = [s for s in steps if s.exten == exten][-1]
            assert last.app in ENDINGS, f"[{context}] {exten} falls off after {last.app}"


def test_every_ivr_menu_the_sample_rules_use_exists() -> None:
    menus = sample_targets("ivr")
    assert menus >= {"welcome-new", "spring-offer"}
    for menu in menus:
        assert PLAN.extension(PLAN.globals["CRM_IVR_CONTEXT"], menu), menu


def test_no_queue_is_named_general() -> None:
    """Asterisk reads `[general]` in queues.conf as its settings: such a queue cannot exist."""
    assert PLAN.globals["CRM_FALLBACK_QUEUE"] != "general"
    assert "general" not in sample_targets("queue")


def test_queues_time_out_and_dial_strings_take_the_target() -> None:
    (queue,) = [s for s in PLAN.contexts["crm-route-queue"] if s.app == "Queue"]
    assert queue.args.split(",")[4] == "${CRM_QUEUE_SECONDS}"
    assert PLAN.globals["CRM_DIAL_NUMBER"].endswith("@trunk")  # PJSIP/NUMBER@ENDPOINT
    for name in ("CRM_DIAL_EXTENSION", "CRM_DIAL_NUMBER"):
        assert "{target}" in PLAN.globals[name], name


PBX_DOC = REPO / "docs" / "pbx.md"


def documented_section() -> str:
    """The "Asterisk dialplan" section of docs/pbx.md, up to the next `## ` heading."""
    text = PBX_DOC.read_text(encoding="utf-8")
    start = text.index("## Asterisk dialplan")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_the_docs_list_every_global_with_its_default() -> None:
    rows = re.findall(r"^\| `(CRM_\w+)` \| `([^`]*)` \|", documented_section(), re.MULTILINE)
    assert dict(rows) == PLAN.globals


def test_the_documented_trunk_line_is_the_one_the_pbx_tests_use() -> None:
    from tests.pbx.asterisk import PHONES

    (trunk,) = re.findall(r"^exten => .*crm-inbound.*$", documented_section(), re.MULTILINE)
    assert trunk in PHONES.splitlines()
    assert trunk.strip() in INCLUDE.read_text()  # the include's header says the same
