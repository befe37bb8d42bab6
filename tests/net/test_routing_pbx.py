"""Routing end to end: the real agent, a fake Asterisk over FastAGI, a real HTTP client."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yarl

from agent.app import Agent
from agent.core.model import CallerRecords
from tests.conftest import AgentFactory, auth
from tests.net.fake_asterisk import DTMF_ENV, call, load_env, retarget

REPO_RULES = Path(__file__).parents[2] / "rules"
SIMPLE = """
default: {destination: "queue:general"}
rules:
  - {name: gold, field: contact.status, op: eq, value: OR, destination: "queue:vip"}
  - name: own manager
    when: {field: owner.extension, op: exists}
    destination: "extension:{owner.extension}"
    voicemail: true
  - {name: sales key, field: call.dtmf, op: eq, value: "5", destination: "queue:sales",
     location: {ivr: [main]}}
"""


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "rules"
    shutil.copytree(REPO_RULES, directory)
    (directory / "routing.yaml").write_text(SIMPLE)
    return directory


@pytest.fixture
async def agent(start_agent: AgentFactory, rules_dir: Path) -> Agent:
    return await start_agent(CRM_AGENT_RULES__DIR=str(rules_dir),
                             CRM_AGENT_AGI__SET_CALLERID_NAME="true")


@pytest.fixture
async def http(agent: Agent) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{agent.http_port}") as session:
        yield session


async def add_contact(http: aiohttp.ClientSession, **body: object) -> dict[str, object]:
    async with http.post("/api/contacts", json=body, headers=auth()) as resp:
        assert resp.status == 201, await resp.text()
        return dict(await resp.json())


def agi_port(agent: Agent) -> int:
    assert agent.agi is not None
    return agent.agi.port


async def test_agi_route_sets_every_channel_variable(agent: Agent,
                                                     http: aiohttp.ClientSession) -> None:
    contact = await add_contact(http, first_name="Jean", last_name="Dupont",
                                phones=["06 12 34 56 78"], fields={"status": "OR"})
    session = await call(agi_port(agent))  # the real env block: callerid +33612345678
    assert len(session.commands) == 1 and session.commands[0].startswith(b"EXEC MSet")
    assert session.variables == {
        "CRM_ROUTE_TYPE": "queue", "CRM_ROUTE_TARGET": "vip", "CRM_VOICEMAIL": "0",
        "CRM_AUDIO": "", "CRM_RULE": "gold", "CRM_KNOWN": "1",
        "CRM_CONTACT_ID": str(contact["id"]), "CRM_CONTACT_NAME": "Jean Dupont",
        "CRM_OWNER_EXTENSION": "", "CRM_SCORE": "0", "CALLERID(name)": "Jean Dupont"}
    await call(agi_port(agent))  # again: from the cache
    async with http.get("/metrics") as resp:
        text = await resp.text()
    assert 'crm_agent_calls_routed_total{rule="gold",via="agi"} 2.0' in text
    assert 'crm_agent_agi_sessions_total{result="ok"} 2.0' in text
    assert 'crm_agent_lookup_cache_total{result="hit"} 1.0' in text
    assert "crm_agent_route_seconds_count 2.0" in text
    assert 'crm_agent_route_seconds_bucket{le="+Inf"} 2.0' in text


async def test_agi_owner_routing_and_unknown_caller(agent: Agent,
                                                    http: aiohttp.ClientSession) -> None:
    contact = await add_contact(http, first_name="Marie", phones=["+33612345678"])
    async with http.post("/api/leads", json={"contact_id": contact["id"], "owner": "202"},
                         headers=auth()) as resp:
        assert resp.status == 201
    session = await call(agi_port(agent))
    assert session.variables["CRM_ROUTE_TYPE"] == "extension"
    assert session.variables["CRM_ROUTE_TARGET"] == "202"
    assert session.variables["CRM_VOICEMAIL"] == "1"
    assert session.variables["CRM_OWNER_EXTENSION"] == "202"
    stranger = load_env().replace(b"agi_callerid: +33612345678", b"agi_callerid: 0699887766")
    other = await call(agi_port(agent), stranger)
    assert other.variables["CRM_RULE"] == "default"
    assert other.variables["CRM_KNOWN"] == "0"
    assert "CRM_ERROR" not in other.variables


async def test_agi_dtmf_and_lookup_scripts(agent: Agent, http: aiohttp.ClientSession) -> None:
    await add_contact(http, first_name="Jean", phones=["0612345678"])
    dtmf = await call(agi_port(agent), load_env(DTMF_ENV))  # args: 5, main
    assert dtmf.variables["CRM_RULE"] == "sales key"
    assert dtmf.variables["CRM_ROUTE_TARGET"] == "sales"
    lookup = await call(agi_port(agent), retarget(load_env(), "lookup"))
    assert lookup.variables["CRM_KNOWN"] == "1"
    assert lookup.variables["CRM_CONTACT_NAME"] == "Jean"
    assert "CRM_ROUTE_TYPE" not in lookup.variables


async def test_hanging_store_still_answers_within_deadline(agent: Agent) -> None:
    never = asyncio.Event()

    async def hang(_e164: str) -> CallerRecords:
        await never.wait()
        raise AssertionError("unreachable")

    agent.router.directory = type("Hung", (), {"find_caller": staticmethod(hang),
                                               "last_agent": staticmethod(hang)})()
    deadline_s = agent.config.routing.deadline_ms / 1000
    sessions = await asyncio.gather(*(call(agi_port(agent)) for _ in range(20)))
    for session in sessions:
        assert session.answer_s <= deadline_s + 0.010 + 0.05  # + loaded-CI scheduling slack
        assert session.variables["CRM_ERROR"] == "crm-timeout"
        assert session.variables["CRM_ROUTE_TARGET"] == "general"
    never.set()


async def test_pbxware_custom_crm_url(agent: Agent, http: aiohttp.ClientSession) -> None:
    await add_contact(http, first_name="Jean", last_name="Dupont", job_title="CEO",
                      phones=["+33612345678"], fields={"status": "OR"})
    for param in ("callerid", "caller", "cid", "phone", "number", "from"):
        async with http.get("/crm", params={"field_name": "status", param: "0612345678"}) as r:
            assert r.content_type == "text/plain"
            assert await r.text() == "OR", param
    async with http.get("/crm", params={"field_name": "contact.job_title",
                                        "callerid": "0033612345678", "dtmf": "1"}) as r:
        assert await r.text() == "CEO"
    async with http.get("/crm", params={"field_name": "call.dtmf", "callerid": "0612345678",
                                        "dtmf": "2"}) as r:
        assert await r.text() == "2"
    async with http.get("/crm", params={"field_name": "caller.anonymous",
                                        "callerid": "anonymous"}) as r:
        assert await r.text() == "1"  # a withheld number: nothing to look up, still answered
    # the PBX routes on these values itself: no decision of ours was made, none is logged
    assert agent.router.decisions.latest(100) == []
    async with http.get("/crm", params={"field_name": "destination",
                                        "callerid": "0612345678"}) as r:
        assert await r.text() == "queue:vip"
    (logged,) = agent.router.decisions.latest(100)
    assert (logged["via"], logged["rule"], logged["destination"]) == ("crm", "gold", "queue:vip")
    async with http.get("/crm", params={"field_name": "status", "callerid": "0699999999"}) as r:
        assert r.status == 200 and await r.text() == ""
    async with http.get("/crm", params={"callerid": "0699999999"}) as r:
        assert r.status == 400 and (await r.json())["error"] == "missing-field-name"


async def test_a_pbxware_url_with_the_token_in_it_works(start_agent: AgentFactory,
                                                        rules_dir: Path) -> None:
    """PBXware appends `?field_name=...` to the URL the admin pasted, query and all."""
    agent = await start_agent(CRM_AGENT_RULES__DIR=str(rules_dir),
                              CRM_AGENT_HTTP__PBX_ALLOW="[10.0.0.0/8]")
    async with aiohttp.ClientSession(f"http://127.0.0.1:{agent.http_port}") as http:
        await add_contact(http, first_name="Jean", phones=["+33612345678"],
                          fields={"status": "OR", "note": "a?b"})
        base = f"http://127.0.0.1:{agent.http_port}/crm"
        pasted = yarl.URL(f"{base}?token=test-token?field_name=status&callerid=0612345678",
                          encoded=True)
        async with http.get(pasted) as resp:
            assert resp.status == 200 and await resp.text() == "OR"
        wrong = yarl.URL(f"{base}?token=nope?field_name=status&callerid=0612345678",
                         encoded=True)
        async with http.get(wrong) as resp:
            assert resp.status == 403
        async with http.get(yarl.URL(f"{base}?token=test-token?field_name=note&callerid="
                                     "0612345678", encoded=True)) as resp:
            assert await resp.text() == "a?b"
        encoded = yarl.URL(f"{base}?token=test-token?field_name=note%3F&callerid=0612345678",
                           encoded=True)
        async with http.get(encoded) as resp:  # an encoded ? is part of the value: no field
            assert resp.status == 200 and await resp.text() == ""


LIST_RULES = """
default: {destination: "queue:general"}
rules:
  - {name: ministry, field: contact.emails, op: ends_with, value: "@interieur.gouv.fr",
     destination: "queue:public"}
  - {name: landline, field: contact.phones, op: starts_with, value: "+331",
     destination: "queue:paris"}
"""


async def test_a_contacts_emails_and_phones_are_fields_for_rules_and_crm(
        start_agent: AgentFactory, tmp_path: Path) -> None:
    """What scoring sees of a contact, routing sees: its lists, any element matching."""
    rules = tmp_path / "lists"
    shutil.copytree(REPO_RULES, rules)
    (rules / "routing.yaml").write_text(LIST_RULES)
    agent = await start_agent(CRM_AGENT_RULES__DIR=str(rules))
    async with aiohttp.ClientSession(f"http://127.0.0.1:{agent.http_port}") as http:
        await add_contact(http, first_name="Paul", phones=["+33612345678", "+33140000000"],
                          emails=["paul@example.fr", "paul@interieur.gouv.fr"])
        await add_contact(http, first_name="Léa", phones=["+33611111111", "+33145000000"])
        async with http.get("/route", params={"callerid": "0612345678",
                                              "trace": "1"}) as resp:
            body = await resp.json()
        assert (body["rule"], body["destination"]["target"]) == ("ministry", "public")
        assert "missing" not in body["trace"][0]["reason"]
        async with http.get("/route", params={"callerid": "0611111111"}) as resp:
            assert (await resp.json())["rule"] == "landline"  # its second phone, +331…
        for field, text in (("email", "paul@example.fr"), ("phone", "+33612345678"),
                            ("contact.emails", "paul@example.fr"), ("first_name", "Paul")):
            async with http.get("/crm", params={"field_name": field,
                                                "callerid": "0612345678"}) as resp:
                assert await resp.text() == text, field
        async with http.get("/crm", params={"field_name": "email",
                                            "callerid": "0611111111"}) as resp:
            assert await resp.text() == ""  # no e-mail: an empty answer, as for any field


async def test_pbx_reads_need_an_allowed_network_or_token(start_agent: AgentFactory,
                                                          rules_dir: Path) -> None:
    agent = await start_agent(CRM_AGENT_RULES__DIR=str(rules_dir),
                              CRM_AGENT_HTTP__PBX_ALLOW="[10.0.0.0/8]")
    async with aiohttp.ClientSession(f"http://127.0.0.1:{agent.http_port}") as http:
        async with http.get("/route", params={"callerid": "0612345678"}) as resp:
            assert resp.status == 403
            assert "not in http.pbx_allow" in (await resp.json())["detail"]
        async with http.get("/route", params={"callerid": "0612345678",
                                              "token": "test-token"}) as resp:
            assert resp.status == 200


async def test_route_json_and_dry_run_trace(agent: Agent, http: aiohttp.ClientSession) -> None:
    await add_contact(http, first_name="Jean", phones=["+33612345678"],
                      fields={"status": "OR"})
    async with http.get("/route", params={"callerid": "06 12 34 56 78", "did": "0140000000"}
                        ) as resp:
        body = await resp.json()
    assert body["destination"] == {"type": "queue", "target": "vip"}
    assert body["rule"] == "gold" and body["contact"]["name"] == "Jean"
    assert body["took_ms"] >= 0 and "trace" not in body
    test = {"caller": "0699999999", "dtmf": "5", "location": "main"}
    async with http.post("/admin/rules/test", json=test, headers=auth()) as resp:
        dry = await resp.json()
    assert dry["rule"] == "sales key"
    assert [(s["rule"], s["matched"]) for s in dry["trace"]] == [
        ("gold", False), ("own manager", False), ("sales key", True)]
    async with http.post("/admin/rules/test", json=test) as resp:
        assert resp.status == 401
    async with http.get("/admin/decisions", headers=auth()) as resp:
        logged = await resp.json()
    assert [d["rule"] for d in logged] == ["gold"]  # dry runs are not logged as calls
    async with http.get("/metrics") as resp:
        text = await resp.text()
    assert 'crm_agent_calls_routed_total{rule="gold",via="http"} 1.0' in text
    misses = [line for line in text.splitlines() if line.startswith("crm_agent_lookup_cache_total")]
    assert misses == ['crm_agent_lookup_cache_total{result="miss"} 2.0']  # two callers


async def test_hot_reload_good_bad_good_while_calls_flow(agent: Agent, rules_dir: Path,
                                                         http: aiohttp.ClientSession) -> None:
    routing = rules_dir / "routing.yaml"
    stop = asyncio.Event()
    answers: list[str] = []

    async def calls() -> None:
        while not stop.is_set():
            session = await call(agi_port(agent))
            answers.append(session.variables["CRM_ROUTE_TARGET"])

    flow = asyncio.create_task(calls())
    routing.write_text(SIMPLE.replace("queue:general", "queue:changed"))
    async with http.post("/admin/rules/reload", headers=auth()) as resp:
        assert (await resp.json()) == {"reloaded": True, "error": None}
    routing.write_text(SIMPLE.replace("op: eq", "op: eqq", 1))
    async with http.post("/admin/rules/reload", headers=auth()) as resp:
        assert resp.status == 422
        assert "eqq" in (await resp.json())["error"]
    async with http.get("/readyz") as resp:
        assert "eqq" in (await resp.json())["rules"]["error"]
    async with http.get("/route", params={"callerid": "0699999999"}) as resp:
        assert (await resp.json())["destination"]["target"] == "changed"  # last good rules
    routing.write_text(SIMPLE)
    async with http.post("/admin/rules/reload", headers=auth()) as resp:
        assert (await resp.json())["reloaded"] is True
    stop.set()
    await flow
    assert answers and set(answers) <= {"general", "changed"}
    async with http.get("/metrics") as resp:
        text = await resp.text()
    assert 'crm_agent_rules_reloads_total{result="failed"} 1.0' in text


async def test_file_watcher_picks_up_a_save(start_agent: AgentFactory, rules_dir: Path) -> None:
    agent = await start_agent(CRM_AGENT_RULES__DIR=str(rules_dir),
                              CRM_AGENT_RULES__WATCH="true")
    saved = SIMPLE.replace("queue:general", "queue:saved")
    assert agent.services is not None
    rules = agent.services.rules
    for _attempt in range(20):  # the watcher arms asynchronously: save until it reacts
        (rules_dir / "routing.yaml").write_text(saved)
        try:
            await asyncio.wait_for(rules.reloaded.wait(), 0.5)
            break
        except TimeoutError:
            continue
    assert rules.value.default.destination.target == "saved"


async def test_decisions_are_persisted_for_audit(agent: Agent,
                                                 http: aiohttp.ClientSession) -> None:
    await add_contact(http, first_name="Jean", phones=["+33612345678"], fields={"status": "OR"})
    await call(agi_port(agent))
    assert agent.store is not None
    for _ in range(60):  # the log is written once a second, off the calls' path
        stored = await agent.store.recent_decisions()
        if stored:
            break
        await asyncio.sleep(0.05)
    (entry,) = stored
    assert entry["rule"] == "gold" and entry["via"] == "agi"
    assert entry["destination"] == "queue:vip" and entry["trace"] == [["gold", True]]
    assert "12345" not in entry["caller"]
    async with http.get("/admin/decisions", headers=auth()) as resp:
        (recent,) = await resp.json()
    assert recent["trace"] == [["gold", True, "contact.status = 'OR' eq 'OR'"]]


async def test_routing_failures_still_answer(agent: Agent, http: aiohttp.ClientSession) -> None:
    def broken_rules() -> None:
        raise RuntimeError("boom")

    original = agent.router.rules
    agent.router.rules = broken_rules  # type: ignore[assignment]
    async with http.get("/route", params={"callerid": "0612345678"}) as resp:
        assert resp.status == 500
        assert await resp.json() == {"error": "internal",
                                     "detail": "unexpected error; see the agent's log"}
    agent.router.rules = original
    never = asyncio.Event()

    async def stall(_e164: str) -> None:
        await never.wait()

    agent.router.budget_s = 10.0  # the router would wait longer than the PBX deadline
    agent.router.directory = type("Stalled", (), {"find_caller": staticmethod(stall),
                                                  "last_agent": staticmethod(stall)})()
    async with http.get("/route", params={"callerid": "0699999999"}) as resp:
        body = await resp.json()
    assert body["error"] == "timeout" and body["rule"] == "default"
    async with http.get("/crm", params={"field_name": "status", "callerid": "0699999998"}) as r:
        assert r.status == 200 and await r.text() == ""
    never.set()


async def test_an_unknown_script_keeps_what_an_earlier_lookup_set(
        agent: Agent, http: aiohttp.ClientSession) -> None:
    await add_contact(http, first_name="Jean", phones=["0612345678"])
    channel = (await call(agi_port(agent), retarget(load_env(), "lookup"))).variables
    unknown = await call(agi_port(agent), retarget(load_env(), "no-such-script"))
    channel.update(unknown.variables)  # the same channel runs both, one after the other

    assert channel["CRM_KNOWN"] == "1" and channel["CRM_CONTACT_NAME"] == "Jean"
    assert sorted(unknown.variables) == ["CRM_AUDIO", "CRM_ERROR", "CRM_ROUTE_TARGET",
                                         "CRM_ROUTE_TYPE", "CRM_RULE", "CRM_VOICEMAIL"]
    assert (unknown.variables["CRM_RULE"], unknown.variables["CRM_ERROR"]) == (
        "default", "unknown-script")
