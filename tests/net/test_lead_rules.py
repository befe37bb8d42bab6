"""Scoring and workflows (§8.3) applied to records written over HTTP (API, web forms)."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest

from agent.app import Agent
from agent.config import ConfigError
from tests.conftest import AgentFactory
from tests.net.leadkit import (
    Client,
    make_rules_dir,
    start,
)

WORKFLOWS = """\
max_depth: 2
workflows:
  - name: gold means vip
    module: contact
    changed: [tier]
    field: contact.tier
    op: eq
    value: gold
    set: {vip: "yes"}
  - name: vip call
    module: contact
    changed: [vip]
    field: contact.vip
    op: eq
    value: "yes"
    set: {segment: premium}
    task: {assignee: "{contact.owner}", title: "Call {contact.name} ({contact.segment})",
           due: 4h}
  - name: ping
    module: contact
    changed: [step]
    field: contact.step
    op: eq
    value: ping
    set: {step: pong}
  - name: pong
    module: contact
    changed: [step]
    field: contact.step
    op: eq
    value: pong
    set: {step: ping}
  - {name: a to b, module: contact, changed: [a], field: contact.a, op: exists, set: {b: "1"}}
  - {name: b to c, module: contact, changed: [b], field: contact.b, op: exists, set: {c: "1"}}
  - {name: c to d, module: contact, changed: [c], field: contact.c, op: exists, set: {d: "1"}}
dependencies:
  - {module: contact, from: salutation, to: gender, values: {Mme: Féminin, M.: Masculin}}
"""


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return make_rules_dir(tmp_path, workflows=WORKFLOWS)


@pytest.fixture
async def agent(start_agent: AgentFactory, rules_dir: Path) -> Agent:
    return await start(start_agent, rules_dir)


async def test_score_follows_every_contact_update(api: Client) -> None:
    contact = await api.post("/api/contacts", {"first_name": "Ana", "phones": ["0612345678"]})
    assert contact["score"] == 0
    path = f"/api/contacts/{contact['id']}"
    assert (await api.patch(path, {"emails": ["ana@example.fr"]}))["score"] == 25
    assert (await api.patch(path, {"job_title": "CTO"}))["score"] == 45
    assert (await api.patch(path, {"fields": {"opted_out": True}}))["score"] == -55
    assert (await api.get(path))["score"] == -55
    status, route = await api.call("GET", "/route", params={"callerid": "06 12 34 56 78"})
    assert status == 200 and route["contact"]["score"] == -55  # caller.score for routing


async def test_lead_and_contact_scores_from_a_web_form(api: Client) -> None:
    answer = await api.lead({"email": "b@example.fr", "RGPD": "1"})
    assert (await api.get(f"/api/leads/{answer['lead_id']}"))["score"] == 35
    contact = await api.get(f"/api/contacts/{answer['contact_id']}")
    assert contact["score"] == 35  # e-mail + consent of its open lead
    organization = f"/api/organizations/{answer['organization_id']}"
    await api.patch(organization, {"fields": {"industry": "construction"}})
    assert (await api.get(f"/api/contacts/{answer['contact_id']}"))["score"] == 45


async def test_score_rules_are_reloaded_with_the_rules_directory(api: Client,
                                                                  rules_dir: Path) -> None:
    contact = await api.post("/api/contacts", {"first_name": "Ana"})
    (rules_dir / "scoring.yaml").write_text(
        "criteria:\n  - {name: named, field: contact.first_name, op: exists, points: 7}\n")
    assert await api.call("POST", "/admin/rules/reload") == (200, {"reloaded": True,
                                                                   "error": None})
    path = f"/api/contacts/{contact['id']}"
    assert (await api.patch(path, {"last_name": "Lopez"}))["score"] == 7
    (rules_dir / "scoring.yaml").write_text("criteria: [oops\n")
    status, answer = await api.call("POST", "/admin/rules/reload")
    assert status == 422 and "scoring.yaml" in answer["error"]
    assert (await api.patch(path, {"last_name": "Lopes"}))["score"] == 7
    _, ready = await api.call("GET", "/readyz")
    assert "scoring.yaml" in ready["leads"]["scoring.yaml"]


async def test_a_workflow_reacts_to_what_another_one_set(api: Client) -> None:
    contact = await api.post("/api/contacts", {"first_name": "Lu", "owner": "201"})
    updated = await api.patch(f"/api/contacts/{contact['id']}", {"fields": {"tier": "gold"}})
    assert updated["fields"]["vip"] == "yes" and updated["fields"]["segment"] == "premium"
    tasks = await api.get("/api/tasks?assignee=201")
    assert [(t["title"], t["contact_id"]) for t in tasks] == [("Call Lu (premium)",
                                                              contact["id"])]
    assert tasks[0]["due_at"] is not None
    await api.patch(f"/api/contacts/{contact['id']}", {"last_name": "Wu"})
    assert len(await api.get("/api/tasks")) == 1  # not re-fired by an unrelated update


async def test_loop_guard_stops_workflows_that_undo_each_other(
        api: Client, caplog: pytest.LogCaptureFixture) -> None:
    contact = await api.post("/api/contacts", {"first_name": "Bo"})
    with caplog.at_level(logging.WARNING, logger="agent.workflows"):
        updated = await api.patch(f"/api/contacts/{contact['id']}",
                                  {"fields": {"step": "ping"}})
    assert updated["fields"]["step"] == "ping"  # ping -> pong -> ping, then stopped
    assert "workflow loop guard: 'ping' is not re-run by its own cascade" in caplog.text
    assert caplog.text.count("loop guard") == 1  # only what would really have looped


async def test_cascade_stops_at_max_depth(api: Client,
                                          caplog: pytest.LogCaptureFixture) -> None:
    contact = await api.post("/api/contacts", {"first_name": "Cy"})
    with caplog.at_level(logging.WARNING, logger="agent.workflows"):
        updated = await api.patch(f"/api/contacts/{contact['id']}", {"fields": {"a": "1"}})
    assert (updated["fields"].get("b"), updated["fields"].get("c"),
            updated["fields"].get("d")) == ("1", "1", None)
    assert "reached max_depth 2; 'c to d' not run" in caplog.text


async def test_field_dependency_applies_to_web_leads(api: Client) -> None:
    answer = await api.lead({"salutation": "mme", "email": "c@example.fr", "RGPD": "1"})
    contact = await api.get(f"/api/contacts/{answer['contact_id']}")
    assert contact["fields"]["gender"] == "Féminin"


async def test_a_broken_rules_file_stops_the_start_naming_file_and_line(
        start_agent: AgentFactory, tmp_path: Path) -> None:
    broken = "workflows:\n  - name: x\n    module: contact\n    set: {score: 3}\n"
    with pytest.raises(ConfigError, match=r"workflows\.yaml:2: rule 'x': contact\.score "
                                          "cannot be set"):
        await start(start_agent, make_rules_dir(tmp_path, workflows=broken))


async def test_default_normalization_of_the_country(start_agent: AgentFactory,
                                                    tmp_path: Path) -> None:
    agent = await start(start_agent, make_rules_dir(tmp_path / "default"))
    async with aiohttp.ClientSession(f"http://127.0.0.1:{agent.http_port}") as session:
        api = Client(session)
        contact = await api.post("/api/contacts", {"fields": {"country": "la france"}})
        assert contact["fields"]["country"] == "France"
        monaco = await api.post("/api/contacts", {"fields": {"postal_code": "98000"}})
        assert (monaco["fields"]["country"], monaco["fields"]["department"],
                monaco["fields"]["region"]) == ("Monaco", "98", "Monaco")


async def test_a_lead_linked_to_no_contact_is_still_saved_and_scored(api: Client) -> None:
    lead = await api.post("/api/leads", {"contact_id": 999, "fields": {"consent": True}})
    assert lead["score"] == 10
