"""Form mapping, dedupe decision and call-center export (§8.1, §8.2), without I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent.core.model import Contact, Lead
from agent.core.rules import RulesError, parse_file
from agent.leads.dispositions import export, map_callcenter
from agent.leads.intake import Candidate, IntakeRules, decide, map_form, parse_target
from agent.leads.intake_records import (
    contact_changes,
    new_lead,
    new_project_id,
    project_contact,
)

RULES = IntakeRules.model_validate({})
NOW = datetime(2026, 4, 1, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(("text", "shown"), [
    ("contact.first_name", "contact.first_name"), ("contact.fields.city", "contact.fields.city"),
    ("contact.phones", "contact.phones"), ("contact.phones.mobile", "contact.phones.mobile"),
    ("lead.utm_campaign", "lead.utm_campaign"), ("organization.name", "organization.name"),
])
def test_targets_round_trip(text: str, shown: str) -> None:
    assert str(parse_target(text)) == shown


@pytest.mark.parametrize(("text", "hint"), [
    ("deal.stage", "expected contact.*, lead.* or organization.*"),
    ("contact.score", "contact.fields.NAME, phones[.KIND], emails[.KIND]"),
    ("lead.phones", "lead.fields.NAME or one of"),
])
def test_bad_targets_say_what_is_accepted(text: str, hint: str) -> None:
    with pytest.raises(ValueError, match=hint.replace(".", r"\.").replace("*", r"\*")
                       .replace("[", r"\[").replace("]", r"\]")):
        parse_target(text)


def test_a_bad_target_in_intake_yaml_names_the_line() -> None:
    text = "team: cc\nmapping:\n  nom: contact.last_name\n  ville: contact.town\n"
    with pytest.raises(RulesError, match=r"intake\.yaml:4: .*unknown target 'contact\.town'"):
        parse_file(text, "intake.yaml", IntakeRules)


def test_form_values_are_mapped_normalized_and_kept_when_unusable() -> None:
    mapped = map_form({"PRENOM": "Jean", "tel_mobile": "06 12 34 56 78", "tel_fixe": "12",
                       "email": "x", "rgpd": "Oui", "utm_source": "google", "zz": "kept",
                       "nom": "  "}, RULES, "FR")
    assert mapped.contact.attrs == {"first_name": "Jean"}
    assert mapped.contact.phones == [("+33612345678", "mobile")]
    assert mapped.lead.attrs == {"utm_source": "google"}
    assert mapped.consent is True
    assert mapped.extra == {"zz": "kept"}
    assert mapped.rejected == {"tel_fixe": "12", "email": "x"}
    assert len(mapped.warnings) == 2


def test_callcenter_values_refuse_locked_fields_and_accept_free_ones() -> None:
    mapped = map_callcenter({"utm_source": "x", "date_acquisition": "y", "budget_max": "9",
                             "primo_accedant": "oui", "prenom": "Jo"}, RULES, "FR")
    assert mapped.lead.fields == {"max_budget": "9", "first_time_buyer": "oui"}
    assert mapped.contact.attrs == {"first_name": "Jo"}
    assert [w.split(":")[0] for w in mapped.warnings] == ["utm_source", "date_acquisition"]


def _candidate(contact_id: int, *, lead_status: str | None = None, how: str = "phone",
               **contact: object) -> Candidate:
    leads = [] if lead_status is None else [Lead(id=contact_id * 10, contact_id=contact_id,
                                                 status=lead_status)]  # type: ignore[arg-type]
    return Candidate(Contact(id=contact_id, **contact), leads,  # type: ignore[arg-type]
                     frozenset(how.split("+")))


def test_decide_prefers_an_open_lead_then_the_best_match() -> None:
    assert decide([]).path == "new-person"
    closed = _candidate(1, lead_status="lost")
    assert (decide([closed]).path, decide([closed]).lead) == ("known-contact", None)
    open_one = _candidate(2, lead_status="open", first_name="Zed")
    match = decide([closed, open_one])
    assert (match.path, match.contact and match.contact.id) == ("open-lead", 2)
    both = _candidate(3, how="phone+email", first_name="Zoe")
    assert decide([_candidate(4, first_name="Al"), both]).contact == both.contact
    linked = _candidate(5, organization_id=9, first_name="Zz")
    assert decide([_candidate(6, first_name="Aa"), linked]).contact == linked.contact
    elise = _candidate(7, first_name="Élise")  # the association's alphabetical rule
    assert decide([_candidate(8, first_name="Fabien"), elise]).contact == elise.contact


def test_project_ids_are_unique_and_resolve_to_their_contact() -> None:
    ids = {new_project_id(42) for _ in range(50)}
    assert len(ids) == 50
    assert {project_contact(i.lower()) for i in ids} == {42}
    assert project_contact("42") is None and project_contact("P1-") is None


def test_web_form_fills_a_contact_but_the_call_center_overwrites() -> None:
    contact = Contact(id=1, first_name="Jean", phones=["+33612345678"],
                      emails=["a@example.fr"], fields={"city": "Lyon"})
    mapped = map_form({"prenom": "Jeannot", "nom": "Dupont", "ville": "Paris",
                       "email": "B@example.fr", "tel_mobile": "0612345678"}, RULES, "FR")
    assert contact_changes(contact, mapped) == {
        "last_name": "Dupont", "fields": {"mobile_phone": "+33612345678"},
        "emails": ["a@example.fr", "B@example.fr"]}
    overwrite = contact_changes(contact, mapped, overwrite=True)
    assert overwrite["first_name"] == "Jeannot" and overwrite["fields"]["city"] == "Paris"
    assert overwrite["emails"] == ["B@example.fr", "a@example.fr"]


def test_new_lead_and_its_export() -> None:
    mapped = map_form({"code_programme": "P7", "email": "a@example.fr", "tel_fixe": "0140000001",
                       "x": "1"}, RULES, "FR")
    contact = Contact(id=3, first_name="Ana", emails=["a@example.fr"],
                      phones=["+33140000001"], fields={"personal_phone": "+33140000001"})
    lead = new_lead(mapped, RULES, contact, "P000003-ABCDEF", NOW).model_copy(
        update={"id": 8})
    assert (lead.team, lead.title, lead.fields["consent"]) == ("call-center", "Ana", False)
    assert lead.fields["acquisition_date"] == "2026-04-01T09:30:00+00:00"
    out = export(lead, contact, RULES)
    assert out["locked"]["code_programme"] == "P7" and out["locked"]["RGPD"] is False
    assert out["editable"]["tel_fixe"] == "+33140000001"
    assert out["editable"]["email"] == "a@example.fr" and out["editable"]["profession"] is None
