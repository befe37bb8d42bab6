"""Compiled rules and their evaluation: first match wins, every step explained (§5)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from agent.model import Destination
from agent.phones import normalize
from agent.rules.conditions import Condition, Context, Needs, Reason, explain
from agent.rules.lists import NumberList
from agent.rules.templates import Template

_DID_JUNK = re.compile(r"[\s.\-/()]")


class TraceStep:
    """One rule looked at: did it match, and why (or why not). The reason text is formatted
    on first read: a live call that nobody inspects never pays for it. Treat as immutable
    (a plain slotted class: built for every rule of every call, it must be cheap)."""

    __slots__ = ("matched", "rule", "why")

    def __init__(self, rule: str, matched: bool, why: Reason) -> None:
        self.rule = rule
        self.matched = matched
        self.why = why

    @property
    def reason(self) -> str:
        return explain(self.why)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TraceStep):
            return NotImplemented
        return (self.rule, self.matched, self.reason) == (other.rule, other.matched,
                                                          other.reason)

    def __hash__(self) -> int:
        return hash((self.rule, self.matched, self.reason))

    def __repr__(self) -> str:
        return f"TraceStep({self.rule!r}, {self.matched}, {self.reason!r})"


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

    def contains(self, ctx: Context) -> bool:
        did = did_key(ctx.get("call.did"), self.region)
        if did is not None and did in self.dids:
            return True
        location = ctx.get("call.location")
        return isinstance(location, str) and location.strip().casefold() in self.ivrs

    def test(self, ctx: Context) -> Reason | None:
        """None when in scope, else the reason it is not."""
        did = did_key(ctx.get("call.did"), self.region)
        if did is not None and did in self.dids:
            return None
        location = ctx.get("call.location")
        location = location.strip().casefold() if isinstance(location, str) else None
        if location is not None and location in self.ivrs:
            return None
        def reason() -> str:
            reasons = []
            if self.dids:
                reasons.append(f"did {did or '(none)'} not in [{self.shown_dids}]")
            if self.ivrs:
                reasons.append(f"location {location or '(none)'} not in [{self.shown_ivrs}]")
            return "out of scope: " + " and ".join(reasons)

        return reason

    def fields(self) -> tuple[str, ...]:
        return ("call.did",) * bool(self.dids) + ("call.location",) * bool(self.ivrs)

    def needs(self) -> Needs:
        return (self.fields(),)


def but(reason: Reason, problem: str) -> Reason:
    return lambda: f"{explain(reason)}, but {problem}"


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
        self.needs = condition.needs() + (() if scope is None else scope.needs())
        self.gate = next((keys[0] for keys in self.needs if len(keys) == 1), None)
        """A context key the rule cannot match without (tested before calling `decide`)."""
        static = target.static
        self.static = None if static is None else Destination(type=kind, target=static)  # type: ignore[arg-type]

    def apply(self, ctx: Context, now: datetime) -> tuple[TraceStep, Destination | None,
                                                         str | None]:
        """The trace step, plus the destination and audio when the rule matches."""
        if self.scope is not None and (out := self.scope.test(ctx)) is not None:
            return TraceStep(self.name, False, out), None, None
        matched, reason = self.condition.test(ctx, now)
        if not matched:
            return TraceStep(self.name, False, reason), None, None
        destination = self.static
        if destination is None:
            target, problem = self.target.render(ctx)
            if target is None:
                return TraceStep(self.name, False, but(reason, problem)), None, None
            destination = Destination(type=self.kind, target=target)  # type: ignore[arg-type]
        audio, problem = (None, "") if self.audio is None else self.audio.render(ctx)
        if problem:
            return TraceStep(self.name, False, but(reason, problem)), None, None
        return TraceStep(self.name, True, reason), destination, audio

    def decide(self, ctx: Context, now: datetime) -> tuple[Destination, str | None] | None:
        """`apply` without the trace: destination and audio when the rule matches."""
        for keys in self.needs:
            for key in keys:
                if key in ctx:
                    break
            else:
                return None
        if self.scope is not None and not self.scope.contains(ctx):
            return None
        if not self.condition.holds(ctx, now):
            return None
        destination = self.static
        if destination is None:
            target = self.target.render(ctx)[0]
            if target is None:
                return None
            destination = Destination(type=self.kind, target=target)  # type: ignore[arg-type]
        if self.audio is None:
            return destination, None
        audio, problem = self.audio.render(ctx)
        return None if problem else (destination, audio)

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

    def decide(self, ctx: Context, *, now: datetime) -> Decision:
        """`evaluate` without building the trace (the same decision, by construction and
        by test): the live path. The trace can be had later by evaluating the same context
        at the same time, since evaluation is pure."""
        for rule in self._rules:
            if rule.gate is not None and rule.gate not in ctx:
                continue
            found = rule.decide(ctx, now)
            if found is not None:
                return Decision(found[0], rule.voicemail, found[1], rule.name)
        return self.default

    def verdicts(self, rule: str) -> tuple[tuple[str, bool], ...]:
        """The rules tried, in order, and whether each matched, when `rule` decided."""
        return self._verdicts[rule]

    def evaluate(self, ctx: Context, *, now: datetime) -> Decision:
        """The first rule that matches `ctx` at `now` (aware), else the default."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        steps = []
        for rule in self._rules:
            step, destination, audio = rule.apply(ctx, now)
            steps.append(step)
            if destination is not None:
                return Decision(destination, rule.voicemail, audio, rule.name, tuple(steps))
        default = self.default
        return Decision(default.destination, default.voicemail, default.audio, "default",
                        tuple(steps))

    def __repr__(self) -> str:
        return f"<RuleSet {len(self._rules)} rules, files={list(self.files)}>"
