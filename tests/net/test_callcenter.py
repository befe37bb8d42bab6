"""`POST /dispositions` and `GET /api/leads/{id}/callcenter` (§8.2) over real HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.app import Agent
from tests.conftest import AgentFactory
from tests.net.leadkit import (
    Client,
    Json,
    make_rules_dir,
    start,
)

FREE_FIELDS = ["action", "commercial", "conclusioncode", "callcenterprojectid",
               "situation_logement", "objectif_achat", "budget_max", "horaire_rappel",
               "profession", "type_bien", "nature_bien", "email2", "tel_professionnel",
               "dept_rech", "ville_rech", "primo_accédant", "projet_détail", "horizon_invest"]


@pytest.fixture
async def agent(start_agent: AgentFactory, tmp_path: Path) -> Agent:
    return await start(start_agent, make_rules_dir(tmp_path))


@pytest.fixture
async def lead(api: Client) -> Json:
    return await api.lead({"prenom": "Jean", "nom": "Dupont", "tel_mobile": "0612345678",
                           "email": "jean@example.fr", "code_programme": "PRG-7",
                           "utm_source": "google", "RGPD": "1"})


def disposition(lead: Json, outcome: str, reason: str, **more: Any) -> dict[str, Any]:
    return {"project_id": lead["project_id"], "outcome": outcome, "reason": reason, **more}


async def test_accord_hands_the_lead_to_the_advisor(api: Client, lead: Json) -> None:
    status, answer = await api.dispose(disposition(lead, "ACCORD", "RDV PHYSIQUE",
                                                   followed_by="201"))
    assert status == 200, answer
    stored = await api.get(f"/api/leads/{lead['lead_id']}")
    assert (stored["owner"], stored["team"], stored["status"]) == ("201", None, "open")
    assert (stored["fields"]["status_reason"], stored["fields"]["project_status"]) == (
        "EN COURS", "ACTIF")
    assert stored["fields"]["closing_reason"] == "RDV PHYSIQUE"
    assert answer["warnings"] == []
    tasks = await api.get("/api/tasks?assignee=201")  # workflows.yaml: callback after ACCORD
    assert [t["lead_id"] for t in tasks] == [lead["lead_id"]]


async def test_refus_hands_the_lead_over_and_closes_it(api: Client, lead: Json) -> None:
    status, answer = await api.dispose(disposition(lead, "refus", "hors budget",
                                                   followed_by="202"))
    assert status == 200, answer
    assert answer["reason"] == "HORS BUDGET"
    stored = await api.get(f"/api/leads/{lead['lead_id']}")
    assert (stored["owner"], stored["team"], stored["status"]) == ("202", None, "lost")
    assert (stored["fields"]["status_reason"], stored["fields"]["project_status"]) == (
        "PERDU", "INACTIF")
    assert await api.get("/api/tasks") == []


async def test_inexploitable_stays_with_the_call_center(api: Client, lead: Json) -> None:
    status, answer = await api.dispose(disposition(lead, "INEXPLOITABLE",
                                                   "ne parle pas francais",
                                                   followed_by="201"))
    assert status == 200, answer
    assert answer["reason"] == "NE PARLE PAS FRANÇAIS"
    assert "stays with the call-center team" in answer["warnings"][0]
    stored = await api.get(f"/api/leads/{lead['lead_id']}")
    assert (stored["owner"], stored["team"], stored["status"]) == (None, "call-center", "lost")
    assert stored["fields"]["conclusion_code"] == "NE PARLE PAS FRANÇAIS"
    assert (stored["fields"]["status_reason"], stored["fields"]["project_status"]) == (
        "ANNULE", "INACTIF")
    export = await api.get(f"/api/leads/{lead['lead_id']}/callcenter")
    assert export["editable"]["conclusioncode"] == "NE PARLE PAS FRANÇAIS"


@pytest.mark.parametrize(("outcome", "reason", "allowed"), [
    ("ACCORD", "HORS BUDGET", "RDV PHYSIQUE, TRANSFERT ABOUTI"),
    ("REFUS", "RDV PHYSIQUE", "SURFACE TROP PETITE, PROGRAMME CLOTURE"),
    ("INEXPLOITABLE", "PAS INTERESSE", "FAUX NUMERO, INJOIGNABLES PERMANENTS"),
])
async def test_reason_of_another_outcome_is_a_422_and_changes_nothing(
        api: Client, lead: Json, outcome: str, reason: str, allowed: str) -> None:
    before = await api.get(f"/api/leads/{lead['lead_id']}")
    status, answer = await api.dispose(disposition(lead, outcome, reason, followed_by="201",
                                                   budget_max="200000"))
    assert (status, answer["error"]) == (422, "invalid-reason")
    assert f"not allowed for {outcome}" in answer["detail"] and allowed in answer["detail"]
    assert await api.get(f"/api/leads/{lead['lead_id']}") == before


async def test_unknown_project_outcome_and_missing_advisor(api: Client, lead: Json) -> None:
    status, answer = await api.dispose({"project_id": "P000999-ABCDEF", "outcome": "ACCORD",
                                        "reason": "RDV PHYSIQUE", "followed_by": "201"})
    assert (status, answer["error"]) == (404, "not-found")
    status, answer = await api.dispose(disposition(lead, "MAYBE", "RDV PHYSIQUE"))
    assert (status, answer["error"]) == (422, "invalid-outcome")
    assert "ACCORD, REFUS, INEXPLOITABLE" in answer["detail"]
    status, answer = await api.dispose(disposition(lead, "ACCORD", "RDV PHYSIQUE"))
    assert status == 422 and "followed_by" in answer["detail"]


async def test_repeated_disposition_changes_nothing_more(api: Client, lead: Json) -> None:
    body = disposition(lead, "ACCORD", "TRANSFERT ABOUTI", followed_by="201")
    _, first = await api.dispose(body)
    stored = await api.get(f"/api/leads/{lead['lead_id']}")
    status, again = await api.dispose({**body, "followed_by": "299", "budget_max": "1"})
    assert status == 200 and again["repeat"] is True and first["repeat"] is False
    assert {**again, "repeat": False} == first
    assert await api.get(f"/api/leads/{lead['lead_id']}") == stored
    assert len(await api.get("/api/tasks")) == 1  # the ACCORD workflow did not fire twice


async def test_free_fields_come_back_into_the_crm(api: Client, lead: Json) -> None:
    status, answer = await api.call("POST", "/dispositions", data={
        "factoryprojectid": lead["project_id"], "outcome": "ACCORD",
        "reason": "RDV TELEPHONIQUE", "suivi_par": "203", "budget_max": "250000",
        "profession": "Infirmière", "email2": "jean.pro@example.fr",
        "tel_professionnel": "01 40 00 00 09", "primo_accedant": "oui",
        "code_programme": "HACKED", "couleur": "bleu"})
    assert status == 200, answer
    assert any("code_programme: locked" in w for w in answer["warnings"])
    export = await api.get(f"/api/leads/{lead['lead_id']}/callcenter")
    assert export["locked"]["code_programme"] == "PRG-7"
    editable = export["editable"]
    assert (editable["budget_max"], editable["profession"], editable["email2"],
            editable["tel_professionnel"], editable["primo_accédant"],
            editable["commercial"]) == ("250000", "Infirmière", "jean.pro@example.fr",
                                        "+33140000009", "oui", "203")
    contact = await api.get(f"/api/contacts/{lead['contact_id']}")
    assert contact["job_title"] == "Infirmière"
    assert "+33140000009" in contact["phones"] and "jean.pro@example.fr" in contact["emails"]
    stored = await api.get(f"/api/leads/{lead['lead_id']}")
    assert stored["fields"]["callcenter_extra"] == {"couleur": "bleu"}


async def test_callcenter_export_is_split_locked_and_editable(api: Client,
                                                              lead: Json) -> None:
    export = await api.get(f"/api/leads/{lead['lead_id']}/callcenter")
    assert export["project_id"] == lead["project_id"] and export["consent"] is True
    assert set(export["locked"]) == {
        "date_acquisition", "factoryprojectid", "code_programme", "projet_immo",
        "commentaire", "utm_campaign", "utm_canal", "utm_source", "utm_medium", "RGPD"}
    assert set(export["editable"]) == {
        "code_postal", "adresse", "adresse2", "ville", "email", "prenom", "nom",
        "tel_mobile", "tel_fixe", "salutation", *FREE_FIELDS}
    assert export["locked"]["factoryprojectid"] == lead["project_id"]
    assert export["locked"]["utm_source"] == "google"
    assert export["editable"]["tel_mobile"] == "+33612345678"
    assert all(export["editable"][key] is None for key in FREE_FIELDS)
    status, _ = await api.call("GET", f"/api/leads/{lead['lead_id']}/callcenter", headers={})
    assert status == 401
    status, _ = await api.call("GET", "/api/leads/999/callcenter")
    assert status == 404
