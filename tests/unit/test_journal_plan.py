"""§7.3 scenario matrix as pure plans, and `journal.yaml` loading."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.core.model import CallRecord, Contact, Deal, Lead, Organization
from agent.journal import (
    OPERATIONS,
    CreateContact,
    CreateLead,
    CreateOrganization,
    CreateTask,
    JournalError,
    JournalSettings,
    LogCall,
    Operation,
    UpdateLead,
    load_settings,
    plan,
)
from agent.journal.association import Association

REPO_RULES = Path(__file__).resolve().parents[2] / "rules"
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
END = START + timedelta(minutes=3)
CALLER = "+33612345678"
REC = "https://agent.example/recordings/in-1.wav?exp=1&sig=x"
SETTINGS = JournalSettings.model_validate({
    "employees": [{"extension": "201", "name": "Alice"}, {"extension": "202", "name": "Bob"},
                  {"extension": "203", "name": "Carol", "role": "senior"},
                  {"extension": "205", "name": "Eve", "role": "top"}],
    "utm_by_did": {"01 40 00 00 00": {"utm_source": "google", "utm_campaign": "brand"}},
    "blocklist": ["06 99 88 77 66"],
})


def call(answered_by: str | None = "201", *, direction: str = "inbound",
         caller: str | None = CALLER, **extra: Any) -> CallRecord:
    answered = answered_by is not None
    data: dict[str, Any] = {
        "call_id": "c1", "direction": direction, "caller": caller, "did": "+33140000000",
        "anonymous": caller is None, "answered": answered, "answered_by": answered_by,
        "started_at": START, "answered_at": START + timedelta(seconds=5) if answered else None,
        "ended_at": END, "outcome": "answered" if answered else "no_answer"}
    if direction == "outbound":
        data.update(did=None, placed_by=extra.pop("placed_by", "201"), anonymous=False)
    return CallRecord.model_validate({**data, **extra})


def known(*, lead_owner: str | None = "201", lead_status: str | None = "open",
          contact_owner: str | None = None, deal_owner: str | None = None,
          deal_open: bool = True) -> Association:
    contact = Contact(id=10, first_name="Jean", organization_id=20, owner=contact_owner,
                      phones=[CALLER])
    lead = (Lead(id=30, contact_id=10, owner=lead_owner, status=lead_status)  # type: ignore[arg-type]
            if lead_status else None)
    deal = Deal(id=40, organization_id=20, owner=deal_owner, is_open=deal_open,
                created_at=START - timedelta(days=3)) if deal_owner else None
    open_lead = lead if lead is not None and lead.status == "open" else None
    owner = ((open_lead.owner if open_lead else None)
             or (deal.owner if deal is not None and deal.is_open else None) or contact_owner)
    return Association(contact=contact, contacts=(contact,),
                       account=Organization(id=20, name="Dupont SA"), deal=deal,
                       lead=open_lead, owner=owner)


def with_switch(name: str, value: bool = False, **more: Any) -> JournalSettings:
    scenarios = {**SETTINGS.scenarios.model_dump(), name: value}
    return SETTINGS.model_copy(update={"scenarios": type(SETTINGS.scenarios)(**scenarios),
                                       **more})


def shape(ops: list[Operation]) -> list[tuple[Any, ...]]:
    """What a reviewer reads in a plan: kinds, owners/assignees, task states, links."""
    out: list[tuple[Any, ...]] = []
    for op in ops:
        if isinstance(op, CreateTask):
            out.append(("task", op.assignee, op.status, op.lead_ref))
        elif isinstance(op, LogCall):
            out.append(("log", op.lead_ref if op.deal_id is None else f"deal:{op.deal_id}"))
        elif isinstance(op, CreateLead | CreateContact | CreateOrganization):
            out.append((op.op.removeprefix("create_"), op.owner))
        else:
            out.append((op.op, *op.model_dump(exclude={"op"}).values()))
    return out


NEW = "new"
MATRIX = [
    ("new caller answered by E", call("201"), None,
     [("organization", "201"), ("contact", "201"), ("lead", "201"), ("log", NEW)]),
    ("new caller missed", call(None), None,
     [("organization", "203"), ("contact", "203"), ("lead", "203"), ("log", NEW),
      ("task", "203", "open", NEW)]),
    ("new caller, unknown extension answers", call("299"), None,
     [("organization", "205"), ("contact", "205"), ("lead", "205"), ("log", NEW),
      ("task", "205", "open", NEW)]),
    ("known caller, open lead, answered by the responsible", call("201"), known(),
     [("log", 30), ("task", "201", "done", 30)]),
    ("known caller, open lead, answered by another manager", call("202"), known(),
     [("log", 30), ("task", "202", "done", 30), ("task", "201", "open", 30)]),
    ("known caller, open lead, unknown extension", call("299"), known(),
     [("log", 30), ("task", "205", "open", 30)]),
    ("known caller, open lead, missed", call(None), known(),
     [("log", 30), ("task", "203", "open", 30)]),
    ("converted lead: a new lead, not the deal", call("202"),
     known(lead_status="converted", deal_owner="201"),
     [("lead", "201"), ("log", NEW), ("task", "202", "done", NEW), ("task", "201", "open", NEW)]),
    ("converted lead, missed", call(None), known(lead_status="converted", contact_owner="204"),
     [("lead", "204"), ("log", NEW), ("task", "203", "open", NEW)]),
    ("known contact nobody owns: the answerer takes the new lead", call("202"),
     known(lead_status=None), [("lead", "202"), ("log", NEW), ("task", "202", "done", NEW)]),
    ("open lead nobody owns: the answerer becomes responsible", call("202"),
     known(lead_owner=None), [("log", 30), ("update_lead", 30, "202"),
                              ("task", "202", "done", 30)]),
    ("outbound, open lead, by the responsible", call(direction="outbound", placed_by="201",
                                                       answered_by="201"), known(),
     [("log", 30), ("task", "201", "done", 30)]),
    ("outbound, open lead, by another manager", call(direction="outbound", placed_by="202",
                                                       answered_by="202"), known(),
     [("log", 30), ("task", "201", "done", 30)]),
    ("outbound not answered", call(None, direction="outbound"), known(), [("log", 30)]),
    ("outbound to a number the CRM does not know", call(direction="outbound"), None, []),
    ("outbound to a contact without an open lead", call(direction="outbound"),
     known(lead_status=None, contact_owner="202"), [("log", None)]),
    ("anonymous caller, missed", call(None, caller=None), None, [("task", "203", "open", None)]),
    ("anonymous caller answered by an employee", call("201", caller=None), None, []),
    ("anonymous caller, unknown extension", call("299", caller=None), None,
     [("task", "205", "open", None)]),
    ("invalid number, missed", call(None, caller=None, caller_raw="12345", anonymous=False),
     None, [("task", "203", "open", None)]),
    ("invalid number answered by an employee", call("201", caller=None, caller_raw="12345",
                                                    anonymous=False), None, []),
    ("blocklisted caller", call("201", caller="+33699887766"), known(), []),
    ("call to a blocklisted DID", call(None, did="+33699887766"), None, []),
]


@pytest.mark.parametrize(("record", "assoc", "expected"), [m[1:] for m in MATRIX],
                         ids=[m[0] for m in MATRIX])
def test_matrix(record: CallRecord, assoc: Association | None,
                expected: list[tuple[Any, ...]]) -> None:
    ops = plan(record, assoc, SETTINGS, recording_url=REC)
    assert shape(ops) == expected
    assert_well_formed(ops)


def assert_well_formed(ops: list[Operation]) -> None:
    """A lead comes with a contact and/or organization, never with a deal; refs resolve."""
    made: set[str] = set()
    for op in ops:
        for kind in ("contact", "organization", "lead"):
            if getattr(op, f"{kind}_ref", None) == "new":
                assert kind in made, f"{op.op} refers to a {kind} not created before it"
        if isinstance(op, CreateLead):
            assert op.contact_ref is not None or op.organization_ref is not None
        made.add(op.op.removeprefix("create_"))
    assert "deal" not in made
    assert OPERATIONS.validate_json(OPERATIONS.dump_json(ops)) == ops


def test_new_lead_carries_the_dids_utm_tags_and_the_callers_number() -> None:
    ops = plan(call("201", utm={"utm_campaign": "spring", "gclid": "abc"}), None, SETTINGS)
    lead = next(op for op in ops if isinstance(op, CreateLead))
    contact = next(op for op in ops if isinstance(op, CreateContact))
    assert (lead.utm_source, lead.utm_medium, lead.utm_campaign) == ("google", None, "spring")
    assert lead.fields["gclid"] == "abc" and lead.fields["call_id"] == "c1"
    assert contact.phones == (CALLER,) and contact.organization_ref == "new"


def test_tasks_carry_due_time_recording_and_call() -> None:
    missed = plan(call(None, recording="vm.wav"), known(), SETTINGS, recording_url=REC)[-1]
    assert isinstance(missed, CreateTask)
    assert missed.due_at == END + timedelta(hours=4) and missed.status == "open"
    assert (missed.call_id, missed.recording_url, missed.contact_ref) == ("c1", REC, 10)
    assert "Missed call from +33612345678" in missed.title
    done, review = plan(call("202"), known(), SETTINGS, recording_url=REC)[1:]
    assert isinstance(done, CreateTask) and isinstance(review, CreateTask)
    assert done.due_at == END and done.recording_url == REC
    assert review.due_at == END + timedelta(hours=4) and review.recording_url == REC
    assert "answered by Bob (202)" in review.title


def test_missed_task_due_is_configurable() -> None:
    settings = SETTINGS.model_copy(update={"missed_task_due": timedelta(minutes=30)})
    task = plan(call(None), None, settings)[-1]
    assert isinstance(task, CreateTask) and task.due_at == END + timedelta(minutes=30)


def test_log_on_deal_instead_of_a_new_lead() -> None:
    settings = SETTINGS.model_copy(update={"on_converted": "log_on_deal"})
    converted = known(lead_status="converted", deal_owner="201")
    assert shape(plan(call("201"), converted, settings)) == [
        ("log", "deal:40"), ("task", "201", "done", None)]
    closed_deal = known(lead_status="converted", deal_owner="201", deal_open=False)
    assert shape(plan(call("201"), closed_deal, settings))[0] == ("lead", "201")


SWITCHES = [
    ("new_caller_answered", call("201"), None, []),
    ("new_caller_missed", call(None), None, []),
    ("unknown_extension", call("299"), known(), [("log", 30)]),
    ("known_caller_open_lead", call("201"), known(), [("task", "201", "done", 30)]),
    ("converted_lead", call(None), known(lead_status="converted"),
     [("task", "203", "open", None)]),
    ("known_caller_missed", call(None), known(), [("log", 30)]),
    ("answered_by_responsible", call("201"), known(), [("log", 30)]),
    ("answered_by_other", call("202"), known(), [("log", 30)]),
    ("outbound_by_responsible", call(direction="outbound"), known(), [("log", 30)]),
    ("outbound_by_other", call(direction="outbound", placed_by="202"), known(), [("log", 30)]),
    ("anonymous_missed", call(None, caller=None), None, []),
]


@pytest.mark.parametrize(("switch", "record", "assoc", "expected"), SWITCHES,
                         ids=[s[0] for s in SWITCHES])
def test_each_switch_turns_its_row_off(switch: str, record: CallRecord,
                                       assoc: Association | None,
                                       expected: list[tuple[Any, ...]]) -> None:
    assert plan(record, assoc, SETTINGS) != plan(record, assoc, with_switch(switch))
    assert shape(plan(record, assoc, with_switch(switch))) == expected


def test_senior_and_top_fall_back_on_each_other() -> None:
    only_top = JournalSettings.model_validate(
        {"employees": [{"extension": "9", "name": "T", "role": "top"},
                       {"extension": "8", "name": "T2", "role": "top"}]})
    assert (only_top.senior(), only_top.top()) == ("9", "9")
    only_senior = JournalSettings.model_validate(
        {"employees": [{"extension": "7", "name": "S", "role": "senior"}]})
    assert (only_senior.senior(), only_senior.top()) == ("7", "7")
    nobody = JournalSettings()
    assert shape(plan(call(None), None, nobody)) == [
        ("organization", None), ("contact", None), ("lead", None), ("log", NEW)]


def test_store_employees_extend_the_files() -> None:
    from agent.core.model import Employee

    more = SETTINGS.with_employees([Employee(extension="201", name="Other"),
                                    Employee(extension="206", name="Zed")])
    assert [e.name for e in more.employees][-2:] == ["Eve", "Zed"]
    assert more.employee("201").name == "Alice"  # type: ignore[union-attr]
    assert shape(plan(call("206"), known(), more))[-1] == ("task", "201", "open", 30)


def test_plan_is_deterministic() -> None:
    for record, assoc in [(call("202"), known()), (call(None), None)]:
        assert plan(record, assoc, SETTINGS, recording_url=REC) == plan(
            record.model_copy(), assoc, SETTINGS, recording_url=REC)


# -- settings -------------------------------------------------------------------------------

def test_sample_file_loads() -> None:
    settings = load_settings(REPO_RULES / "journal.yaml")
    assert [e.extension for e in settings.employees] == ["201", "202", "203", "204", "205"]
    assert (settings.senior(), settings.top()) == ("203", "205")
    assert settings.missed_task_due == timedelta(hours=4)
    assert settings.utm_by_did["+33140000010"].utm_source == "google"
    assert settings.blocked("+33699887766")
    assert all(settings.scenarios.model_dump().values())


@pytest.mark.parametrize(("text", "message"), [
    ("employees:\n  - {extension: 201, name: A, role: boss}\n",
     r"journal.yaml:2: employees.0.role: Input should be 'manager', 'senior' or 'top'"),
    ("missed_task_due: soon\n", r"journal.yaml:1: missed_task_due: .*not a duration"),
    ("scenarios:\n  new_caller_answerd: true\n",
     r"journal.yaml:2: scenarios.new_caller_answerd: unknown key"),
    ("blocklist: [hello]\n", r"journal.yaml:1: blocklist: .*'hello' is not a valid phone"),
    ("employees:\n  - {extension: 201, name: A}\n  - {extension: 201, name: B}\n",
     r"employees: .*extension 201 is listed twice"),
    ("on_converted: deal\n", r"on_converted: Input should be 'new_lead' or 'log_on_deal'"),
    ("- a\n- b\n", r"journal.yaml: the top level must be a mapping"),
    ("employees: [\n", r"journal.yaml:\d+: invalid YAML"),
])
def test_bad_files_name_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "journal.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(JournalError, match=message):
        load_settings(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match=r"journal.yaml: cannot read"):
        load_settings(tmp_path / "journal.yaml")


def test_numbers_stay_text_and_dids_any_format(tmp_path: Path) -> None:
    path = tmp_path / "journal.yaml"
    path.write_text("employees: [{extension: 0201, name: Zero}]\n"
                    "utm_by_did: {0033140000000: {utm_source: a}, '7000': {utm_source: b}}\n")
    settings = load_settings(path)
    assert settings.employees[0].extension == "0201"
    assert set(settings.utm_by_did) == {"+33140000000", "7000"}
    assert settings.utm_for(call(did=None, did_raw="7000")) == {"utm_source": "b"}
    assert isinstance(plan(call("0201"), None, settings)[0], CreateOrganization)
    assert not any(isinstance(op, UpdateLead) for op in plan(call("0201"), None, settings))


def test_blocklist_takes_numbers_in_any_format_and_international_prefixes() -> None:
    settings = JournalSettings.model_validate(
        {"blocklist": ["06 99 99 99 99", "0033 899*"]}, context={"region": "FR"})
    assert settings.blocked("+33699999999") and settings.blocked("+33899123456")
    assert not settings.blocked("+33612345678") and not settings.blocked(None)


@pytest.mark.parametrize(("raw", "named"), [
    ("12345", "an invalid number (12345)"), ("anonymous", "a withheld number"),
    (None, "a withheld number")])
def test_tasks_tell_an_invalid_number_from_a_withheld_one(raw: str | None, named: str) -> None:
    presented = {"caller": None, "caller_raw": raw, "anonymous": raw != "12345"}
    missed = plan(call(None, **presented), None, SETTINGS)
    unknown = plan(call("299", **presented), None, SETTINGS)
    for task in (*missed, *unknown):
        assert isinstance(task, CreateTask) and f"from {named}" in task.description
    assert [t.title for t in missed if isinstance(t, CreateTask)] == [
        f"Missed call from {named}: call back"]


def test_blocklist_lists_name_routing_lists_spam_by_default(tmp_path: Path) -> None:
    from agent.core.rules.lists import NumberList

    lists = {"spam": NumberList("spam", [("+33899", True)]),
             "vip": NumberList("vip", [(CALLER, False)])}
    assert SETTINGS.blocklist_lists == ("spam",)
    assert SETTINGS.listed("+33899123456", lists) == "spam"
    assert SETTINGS.listed(CALLER, lists) is None and SETTINGS.listed(None, lists) is None
    path = tmp_path / "journal.yaml"
    path.write_text("blocklist_lists: [robots, vip]\n")
    settings = load_settings(path)
    assert settings.listed(CALLER, lists) == "vip" and settings.listed("+33899123456", {}) is None
    assert load_settings(REPO_RULES / "journal.yaml").blocklist_lists == ("spam",)
