"""`journal.yaml` (§7.2, §7.3): employees, follow-up delay, call tracking, blocklist (and
the routing lists that count as one) and one switch per row of the scenario matrix.
Validated with pydantic; errors name the file, line and key."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from agent.core import phones
from agent.core.model import CallRecord, Employee, Role
from agent.core.rules.durations import Duration
from agent.core.rules.lists import NumberList, parse_entry
from agent.core.rules.reload import Reloadable

DEFAULT_DUE = timedelta(hours=4)
UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign")


class JournalError(Exception):
    """A journal settings file that cannot be used; the message names the file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scenarios(_Strict):
    """One switch per row of the §7.3 matrix (plus anonymous callers)."""

    new_caller_answered: bool = True
    new_caller_missed: bool = True
    unknown_extension: bool = True
    known_caller_open_lead: bool = True
    converted_lead: bool = True
    known_caller_missed: bool = True
    answered_by_responsible: bool = True
    answered_by_other: bool = True
    outbound_by_responsible: bool = True
    outbound_by_other: bool = True
    anonymous_missed: bool = True


class UtmTags(_Strict):
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None

    def tags(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v}


def _region(info: ValidationInfo) -> str:
    context = info.context if isinstance(info.context, Mapping) else {}
    return str(context.get("region", "FR"))


class JournalSettings(_Strict):
    employees: list[Employee] = Field(default_factory=list)
    missed_task_due: Duration = DEFAULT_DUE
    utm_by_did: dict[str, UtmTags] = Field(default_factory=dict)
    blocklist: frozenset[str] = frozenset()
    blocklist_lists: tuple[str, ...] = ("spam",)
    """Lists of the routing rules (`lists:` in routing.yaml) whose callers are treated like
    the blocklist: the callers the rules hang up on as spam get no CRM record."""
    on_converted: Literal["new_lead", "log_on_deal"] = "new_lead"
    scenarios: Scenarios = Field(default_factory=Scenarios)
    _by_ext: dict[str, Employee] = PrivateAttr(default_factory=dict)

    def model_post_init(self, _context: Any) -> None:
        self._by_ext = {e.extension: e for e in self.employees}

    @cached_property
    def blocked_numbers(self) -> NumberList:
        """`blocklist` as a number list (numbers and `+prefix*`), built on first use; a
        plain attribute read afterwards, as it is asked on every routed call."""
        return NumberList("blocklist", (
            (entry[:-1], True) if entry.endswith("*") else (entry, False)
            for entry in self.blocklist))

    @field_validator("employees")
    @classmethod
    def _unique(cls, value: list[Employee]) -> list[Employee]:
        seen: set[str] = set()
        for employee in value:
            if employee.extension in seen:
                raise ValueError(f"extension {employee.extension} is listed twice")
            seen.add(employee.extension)
        return value

    @field_validator("utm_by_did")
    @classmethod
    def _dids(cls, value: dict[str, UtmTags], info: ValidationInfo) -> dict[str, UtmTags]:
        """DIDs in any format; numbers that do not parse (short internal DIDs) stay as text."""
        region = _region(info)
        return {phones.normalize(k, region) or k.strip(): v for k, v in value.items()}

    @field_validator("blocklist", mode="before")
    @classmethod
    def _numbers(cls, value: object, info: ValidationInfo) -> frozenset[str]:
        """Numbers in any format, or international prefixes (`+33899*`): E.164 / `+prefix*`."""
        if not isinstance(value, list | tuple | set | frozenset):
            raise ValueError("must be a list of phone numbers")
        out = set()
        for raw in value:
            try:
                entry, is_prefix = parse_entry(str(raw), _region(info))
            except ValueError:
                raise ValueError(f"{raw!r} is not a valid phone number or +prefix*") from None
            out.add(entry + "*" if is_prefix else entry)
        return frozenset(out)

    def employee(self, extension: str | None) -> Employee | None:
        return self._by_ext.get(extension) if extension else None

    def first(self, *roles: Role) -> Employee | None:
        for role in roles:
            for employee in self.employees:
                if employee.role == role:
                    return employee
        return None

    def senior(self) -> str | None:
        found = self.first(Role.SENIOR, Role.TOP)
        return found.extension if found else None

    def top(self) -> str | None:
        found = self.first(Role.TOP, Role.SENIOR)
        return found.extension if found else None

    def blocked(self, number: str | None) -> bool:
        """Whether `number` (E.164) is on the blocklist (asked on every routed call)."""
        return number is not None and number in self.blocked_numbers

    def listed(self, number: str | None, lists: Mapping[str, NumberList]) -> str | None:
        """The first of `blocklist_lists` that `number` is on (lists missing from `lists`
        are skipped)."""
        if number is None:
            return None
        return next((name for name in self.blocklist_lists
                     if name in lists and number in lists[name]), None)

    def utm_for(self, call: CallRecord) -> dict[str, str]:
        """Call-tracking tags of the DID, overridden by tags the call itself carries."""
        tags = self.utm_by_did.get(call.did or "") or self.utm_by_did.get(call.did_raw or "")
        return {**(tags.tags() if tags else {}), **call.utm}

    def with_employees(self, extra: Iterable[Employee]) -> JournalSettings:
        """These settings plus employees known only to the store (listed after the file's)."""
        more = [e for e in extra if e.extension not in self._by_ext]
        if not more:
            return self
        merged = self.model_copy(update={"employees": [*self.employees, *more]})
        merged.model_post_init(None)  # model_copy keeps the old private index
        return merged


def load_settings(path: Path, *, region: str = "FR") -> JournalSettings:
    """Read and validate `journal.yaml`; JournalError says which file, line and key."""
    from agent.core.rules.errors import RulesError
    from agent.core.rules.source import read_yaml

    try:
        doc = read_yaml(path.read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        raise JournalError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except RulesError as exc:
        raise JournalError(str(exc)) from None
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise JournalError(f"{path}: the top level must be a mapping")
    try:
        return JournalSettings.model_validate(data, context={"region": region})
    except ValidationError as exc:
        error = exc.errors()[0]
        key_path = doc.locate(tuple(error["loc"]))
        line = doc.line(key_path)
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise JournalError(f"{path}{f':{line}' if line else ''}: {where}: {message}{more}"
                           ) from None


def settings_file(path: Path, region: str) -> Reloadable[JournalSettings]:
    """`journal.yaml`, reloaded with the rules directory; missing: defaults, no employees."""
    return Reloadable(path, lambda p: load_settings(p, region=region), missing=JournalSettings,
                      errors=(JournalError,))
