"""`POST /leads` (§8.1) over a real HTTP client against the real agent."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlencode

import pytest

from agent.app import Agent
from tests.conftest import AgentFactory, auth
from tests.net.leadkit import (
    Client,
    make_rules_dir,
    signature,
    start,
)

FULL_FORM = {
    "code_postal": "75011", "adresse": "12 rue Oberkampf", "adresse2": "Bât. B",
    "ville": "Paris", "email": "jean.dupont@example.fr", "prenom": "Jean", "nom": "Dupont",
    "tel_mobile": "06 12 34 56 78", "tel_fixe": "01 40 00 00 01", "salutation": "M.",
    "code_programme": "PRG-042", "projet_immo": "T3 investissement",
    "commentaire": "Rappeler après 18h", "utm_campaign": "printemps", "utm_canal": "web",
    "utm_source": "google", "utm_medium": "cpc", "RGPD": "1",
}


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return make_rules_dir(tmp_path, journal='blocklist: ["06 99 99 99 99"]\n')


@pytest.fixture
async def agent(start_agent: AgentFactory, rules_dir: Path) -> Agent:
    return await start(start_agent, rules_dir)


async def test_new_person_gets_contact_lead_and_organization(api: Client) -> None:
    answer = await api.lead({"prenom": "Jean", "nom": "Dupont", "tel_mobile": "0612345678",
                             "RGPD": "oui"})
    assert answer["result"] == "created" and answer["match"] == "new-person"
    assert re.fullmatch(r"P\d{6}-[A-Z0-9]{6}", answer["project_id"])
    lead = await api.get(f"/api/leads/{answer['lead_id']}")
    contact = await api.get(f"/api/contacts/{answer['contact_id']}")
    organization = await api.get(f"/api/organizations/{answer['organization_id']}")
    assert lead["team"] == "call-center" and lead["owner"] is None
    assert lead["contact_id"] == contact["id"]
    assert lead["organization_id"] == contact["organization_id"] == organization["id"]
    assert organization["name"] == "Jean Dupont"
    assert lead["fields"]["project_id"] == answer["project_id"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00",
                        lead["fields"]["acquisition_date"])
    assert lead["fields"]["status_reason"] == "EN COURS"
    assert contact["phones"] == ["+33612345678"]


async def test_every_default_form_key_lands_in_its_crm_field(api: Client) -> None:
    answer = await api.lead(FULL_FORM)
    assert answer["warnings"] == [] and answer["unknown_fields"] == []
    contact = await api.get(f"/api/contacts/{answer['contact_id']}")
    lead = await api.get(f"/api/leads/{answer['lead_id']}")
    assert (contact["first_name"], contact["last_name"]) == ("Jean", "Dupont")
    assert contact["emails"] == ["jean.dupont@example.fr"]
    assert contact["phones"] == ["+33612345678", "+33140000001"]
    assert contact["fields"].pop("gender") == "Masculin"  # workflows.yaml: from salutation
    assert contact["fields"] == {
        "postal_code": "75011", "street1": "12 rue Oberkampf", "street2": "Bât. B",
        "city": "Paris", "salutation": "M.", "mobile_phone": "+33612345678",
        "personal_phone": "+33140000001"}
    assert (lead["utm_campaign"], lead["utm_source"], lead["utm_medium"]) == (
        "printemps", "google", "cpc")
    assert {k: lead["fields"][k] for k in ("main_programme", "customer_project",
                                           "requirement_description", "channel",
                                           "consent")} == {
        "main_programme": "PRG-042", "customer_project": "T3 investissement",
        "requirement_description": "Rappeler après 18h", "channel": "web", "consent": True}
    export = await api.get(f"/api/leads/{answer['lead_id']}/callcenter")
    given = {**export["locked"], **export["editable"]}
    expected = {**FULL_FORM, "tel_mobile": "+33612345678", "tel_fixe": "+33140000001",
                "RGPD": True}
    assert {key: given[key] for key in FULL_FORM} == expected


async def test_unknown_form_keys_are_kept_on_the_lead(api: Client) -> None:
    answer = await api.lead({"email": "a@example.fr", "RGPD": "1", "budget": "300k",
                             "partner_ref": "XZ-9"})
    assert answer["unknown_fields"] == ["budget", "partner_ref"]
    lead = await api.get(f"/api/leads/{answer['lead_id']}")
    assert lead["fields"]["extra"] == {"budget": "300k", "partner_ref": "XZ-9"}


async def test_lead_without_consent_is_stored_and_marked(api: Client) -> None:
    missing = await api.lead({"email": "a@example.fr"})
    refused = await api.lead({"email": "b@example.fr", "rgpd": "non"})
    garbled = await api.lead({"email": "c@example.fr", "RGPD": "peut-être"})
    zero = await api.lead({"email": "d@example.fr", "RGPD": "0"})
    given = await api.lead({"email": "e@example.fr", "RGPD": "1"})
    assert missing["consent"] is refused["consent"] is garbled["consent"] is False
    assert zero["consent"] is False and given["consent"] is True
    for answer in (missing, refused, garbled, zero):
        assert "no consent (RGPD) given: the lead is stored with consent false" in \
            answer["warnings"]
    assert not any("consent" in w for w in given["warnings"])
    assert any("RGPD" in w and "yes/no" in w for w in garbled["warnings"])
    export = await api.get(f"/api/leads/{missing['lead_id']}/callcenter")
    assert export["consent"] is False and export["locked"]["RGPD"] is False


async def test_open_lead_of_the_same_person_gets_the_new_information(api: Client) -> None:
    first = await api.lead({"prenom": "Jean", "tel_mobile": "06 12 34 56 78", "RGPD": "1",
                            "commentaire": "T2"})
    again = await api.lead({"prenom": "Jeannot", "tel_mobile": "+33 6 12 34 56 78",
                            "email": "jean@example.fr", "commentaire": "T3 plutôt"})
    assert again["result"] == "updated" and again["match"] == "open-lead"
    assert again["matched_by"] == ["phone"]
    assert (again["lead_id"], again["project_id"]) == (first["lead_id"], first["project_id"])
    assert again["consent"] is True  # not withdrawn by a form that does not mention it
    lead = await api.get(f"/api/leads/{first['lead_id']}")
    contact = await api.get(f"/api/contacts/{first['contact_id']}")
    assert lead["fields"]["requirement_description"] == "T3 plutôt"
    assert lead["fields"]["submissions"] == 2
    assert contact["first_name"] == "Jean"  # the contact's data is not overwritten...
    assert contact["emails"] == ["jean@example.fr"]  # ...but what it lacked is added
    assert len(await api.get("/api/leads")) == 1


async def test_known_contact_without_open_lead_gets_a_new_lead(api: Client) -> None:
    contact = await api.post("/api/contacts", {"first_name": "Marie",
                                               "phones": ["0611111111"]})
    await api.post("/api/leads", {"contact_id": contact["id"], "status": "converted"})
    answer = await api.lead({"tel_mobile": "06.11.11.11.11", "RGPD": "1"})
    assert answer["result"] == "created" and answer["match"] == "known-contact"
    assert answer["contact_id"] == contact["id"]
    assert len(await api.get("/api/leads")) == 2
    assert await api.get("/api/organizations") == []


async def test_match_by_e_mail_only(api: Client) -> None:
    contact = await api.post("/api/contacts", {"first_name": "Paul",
                                               "emails": ["Paul@Example.fr"]})
    answer = await api.lead({"email": "paul@example.FR", "tel_mobile": "0622222222",
                             "RGPD": "1"})
    assert answer["contact_id"] == contact["id"] and answer["matched_by"] == ["email"]
    updated = await api.get(f"/api/contacts/{contact['id']}")
    assert updated["phones"] == ["+33622222222"]
    assert updated["emails"] == ["Paul@Example.fr"]


async def test_match_by_phone_written_in_another_format(api: Client) -> None:
    first = await api.lead({"tel_fixe": "0033 1 40 00 00 02", "RGPD": "1"})
    again = await api.lead({"tel_mobile": "01-40-00-00-02", "RGPD": "1"})
    assert again["contact_id"] == first["contact_id"] and again["matched_by"] == ["phone"]


async def test_unusable_values_keep_the_lead_and_say_why(api: Client) -> None:
    answer = await api.lead({"nom": "Martin", "tel_mobile": "12", "email": "not-an-email",
                             "RGPD": "1"})
    assert answer["result"] == "created"
    assert any("'12' is not a valid phone number" in w for w in answer["warnings"])
    assert any("not a valid e-mail" in w for w in answer["warnings"])
    assert any("could not be matched" in w for w in answer["warnings"])
    lead = await api.get(f"/api/leads/{answer['lead_id']}")
    assert lead["fields"]["rejected"] == {"tel_mobile": "12", "email": "not-an-email"}


async def test_blocklisted_number_is_accepted_but_creates_nothing(api: Client) -> None:
    status, answer = await api.call("POST", "/leads", json={"tel_mobile": "+33699999999",
                                                             "nom": "Spam"})
    assert status == 202
    assert answer["result"] == "ignored" and answer["reason"] == "blocklisted"
    assert "nothing was created" in answer["detail"]
    assert await api.get("/api/contacts") == [] and await api.get("/api/leads") == []


async def test_form_encoded_body(api: Client) -> None:
    status, answer = await api.call("POST", "/leads", data={
        "prenom": "Zoé", "tel_mobile": "06 33 33 33 33", "RGPD": "on", "source_page": "/t3"})
    assert status == 201 and answer["consent"] is True
    contact = await api.get(f"/api/contacts/{answer['contact_id']}")
    assert contact["first_name"] == "Zoé"
    lead = await api.get(f"/api/leads/{answer['lead_id']}")
    assert lead["fields"]["extra"] == {"source_page": "/t3"}


async def test_signed_webhook_is_accepted_and_a_bad_signature_refused(api: Client) -> None:
    body = {"email": "signed@example.fr", "RGPD": "1"}
    status, answer = await api.signed("/leads", body)
    assert status == 201, answer
    status, answer = await api.signed("/leads", body, "t=1,v1=00")
    assert (status, answer["error"]) == (401, "bad-signature")
    stale = signature(b'{"email": "signed@example.fr", "RGPD": "1"}', at=1)
    status, answer = await api.signed("/leads", body, stale)
    assert status == 401
    status, answer = await api.signed("/leads", body, signature(b"{}", secret="wrong"))
    assert status == 401
    status, answer = await api.call("POST", "/leads", json=body, headers={})
    assert (status, answer["error"]) == (401, "unauthorized")
    form = urlencode({"email": "form@example.fr", "code_postal": "06000"}).encode()
    status, answer = await api.call("POST", "/leads", data=form, headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Signature": signature(form)})
    assert status == 201, answer
    assert len(await api.get("/api/leads")) == 2


@pytest.mark.parametrize(("body", "code"), [(b"{not json", "bad-json"),
                                            (b'["a", "b"]', "bad-json"),
                                            (b"{}", "empty-lead"),
                                            (b'{"nom": "  ", "email": ""}', "empty-lead")])
async def test_garbage_body_is_a_400_and_creates_nothing(api: Client, body: bytes,
                                                         code: str) -> None:
    headers = {**auth(), "Content-Type": "application/json"}
    status, answer = await api.call("POST", "/leads", data=body, headers=headers)
    assert (status, answer["error"]) == (400, code)
    assert await api.get("/api/leads") == []
