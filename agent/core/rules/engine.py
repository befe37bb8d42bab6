"""Compiled rules and their evaluation: first match wins, every step explained (§5)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from agent.core.model import Destination
from agent.core.phones import normalize
from agent.core.rules.conditions import Condition, Context, Needs, Verdict
from agent.core.rules.lists import NumberList
from agent.core.rules.templates import Template

_DID_JUNK = re.compile(r"[\s.\-/()]")


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One rule looked at: did it match, and why (or why not)."""

    rule: str
    matched: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    """Where the call goes; `rule` is the matched rule's name or `default`."""

    destination: Destination
    voicemail: bool
    audio: str | None
    rule: str
    trace: tuple[TraceStep, ...] = ()


def did_key(raw: object, region: str) -> str | None:
    """A DID as compared by location scopes: E.164 when valid, else its bare digits."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    return normalize(raw, region) or _DID_JUNK.sub("", raw) or None


class Scope:
    """`location:` — the rule applies when the call's DID or its IVR location is listed."""

    __slots__ = ("dids", "ivrs", "region", "shown_dids", "shown_ivrs")

    def __init__(self, dids: Iterable[str], ivrs: Iterable[str], region: str) -> None:
        self.dids = frozenset(dids)
        self.ivrs = frozenset(ivr.strip().casefold() for ivr in ivrs)
        self.region = region
        self.shown_dids = ", ".join(sorted(self.dids))
        self.shown_ivrs = ", ".join(sorted(self.ivrs))

    def test(self, ctx: Context, why: bool = False) -> Verdict:
        """In scope? With `why`, the reason when it is not."""
        did = did_key(ctx.get("call.did"), self.region)
        if did is not None and did in self.dids:
            return True, ""
        location = ctx.get("call.location")
        location = location.strip().casefold() if isinstance(location, str) else None
        if location is not None and location in self.ivrs:
            return True, ""
        if not why:
            return False, ""
        reasons = []
        if self.dids:
            reasons.append(f"did {did or '(none)'} not in [{self.shown_dids}]")
        if self.ivrs:
            reasons.append(f"location {location or '(none)'} not in [{self.shown_ivrs}]")
        return False, "out of scope: " + " and ".join(reasons)

    def fields(self) -> tuple[str, ...]:
        return ("call.did",) * bool(self.dids) + ("call.location",) * bool(self.ivrs)

    def needs(self) -> Needs:
        return (self.fields(),)


Outcome = tuple[Destination | None, str | None, str]
"""A rule's destination and audio when it matches (else None), and the reason when asked."""


class Rule:
    __slots__ = ("audio", "condition", "gate", "kind", "name", "needs", "scope", "static",
                 "target", "voicemail")

    def __init__(self, name: str, condition: Condition, kind: str, target: Template,
                 voicemail: bool, audio: Template | None, scope: Scope | None) -> None:
        self.name = name
        self.condition = condition
        self.kind = kind
        self.target = target
        self.voicemail = voicemail
        self.audio = audio
        self.scope = scope
        needs = condition.needs() + (() if scope is None else scope.needs())
        self.gate = next((keys[0] for keys in needs if len(keys) == 1), None)
        """A context key the rule cannot match without: tested first, inline."""
        self.needs = tuple(keys for keys in needs if keys != (self.gate,))
        """The other clauses it needs: one key of each (`lacks_a_need`)."""
        static = target.static
        self.static = None if static is None else Destination(type=kind, target=static)  # type: ignore[arg-type]

    def lacks_a_need(self, ctx: Context) -> bool:
        """Whether `ctx` has no key of one of the rule's other clauses (`needs`): then the
        rule cannot match, and a live call skips it without evaluating it."""
        for keys in self.needs:  # loops: no generator nor keys view per rule per call
            for key in keys:
                if key in ctx:
                    break
            else:  # not one key of this clause
                return True
        return False

    def apply(self, ctx: Context, now: datetime, why: bool = False) -> Outcome:
        if self.scope is not None:
            inside, out = self.scope.test(ctx, why)
            if not inside:
                return None, None, out
        matched, reason = self.condition.test(ctx, now, why)
        if not matched:
            return None, None, reason
        destination = self.static
        if destination is None:
            target, problem = self.target.render(ctx)
            if target is None:
                return None, None, f"{reason}, but {problem}"
            destination = Destination(type=self.kind, target=target)  # type: ignore[arg-type]
        audio, problem = (None, "") if self.audio is None else self.audio.render(ctx)
        if problem:
            return None, None, f"{reason}, but {problem}"
        return destination, audio, reason

    def fields(self) -> Iterable[str]:
        yield from self.condition.fields()
        for template in (self.target, self.audio):
            for field in () if template is None else template.fields:
                yield from field.names
        if self.scope is not None:
            yield from self.scope.fields()


class RuleSet:
    """Compiled rules file. `evaluate` is pure: no I/O, no regex compiling, deterministic."""

    __slots__ = ("_rules", "_verdicts", "default", "fields", "files", "key", "lists", "names")

    def __init__(self, rules: Iterable[Rule], default: Decision, files: Iterable[str],
                 lists: Mapping[str, NumberList] | None = None) -> None:
        self._rules = tuple(rules)
        self.default = default
        self.files = tuple(files)
        self.lists: Mapping[str, NumberList] = dict(lists or {})
        """The `lists:` section by name (the call journal reads those in `blocklist_lists`)."""
        self.names = tuple(rule.name for rule in self._rules)
        self.key = hashlib.blake2b("\n".join(self.names).encode(), digest_size=8).hexdigest()
        """Names the sequence of rule names (what a logged decision's verdicts refer to)."""
        self.fields = frozenset(name for rule in self._rules for name in rule.fields())
        names = self.names
        self._verdicts = {
            **{name: tuple((n, n == name) for n in names[:i + 1]) for i, name in
               enumerate(names)},
            "default": tuple((n, False) for n in names)}

    def evaluate(self, ctx: Context, *, now: datetime, trace: bool = True) -> Decision:
        """The first rule that matches `ctx` at `now` (aware), else the default; with
        `trace`, every rule looked at and why. A live call goes without the trace (and
        skips the rules that cannot match): since evaluation is pure, the same context
        at the same time gives it later."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if not trace:  # a live call: skips the rules that cannot match, builds no step
            for rule in self._rules:
                if rule.gate is not None and rule.gate not in ctx:  # most skips
                    continue
                if rule.needs and rule.lacks_a_need(ctx):
                    continue
                destination, audio, _ = rule.apply(ctx, now)
                if destination is not None:
                    return Decision(destination, rule.voicemail, audio, rule.name)
            return self.default
        steps = []
        for rule in self._rules:
            destination, audio, reason = rule.apply(ctx, now, True)
            steps.append(TraceStep(rule.name, destination is not None, reason))
            if destination is not None:
                return Decision(destination, rule.voicemail, audio, rule.name, tuple(steps))
        return replace(self.default, trace=tuple(steps)) if steps else self.default

    def verdicts(self, rule: str) -> tuple[tuple[str, bool], ...]:
        """The rules tried, in order, and whether each matched, when `rule` decided."""
        return self._verdicts[rule]

    def __repr__(self) -> str:
        return f"<RuleSet {len(self._rules)} rules, files={list(self.files)}>"
