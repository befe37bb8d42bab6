"""The shipped dialplan on a real Asterisk (issue #12): every route type, the agent down or
slow, unknown targets, and what the journal wrote from the PBX's own AMI events.

One Asterisk and one agent serve the whole module. Calls come in through a trunk context
as the include's header tells an admin to write it; phones are Local channels
(tests/pbx/asterisk.py). Skipped when no Asterisk is installed (`ASTERISK_BIN` or PATH).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from agent.app import Agent
from agent.core.model import CallRecord
from agent.ops.http import READY_CHECKS
from tests.conftest import agent_config, auth
from tests.pbx.asterisk import AMI_SECRET, AMI_USER, REPO, Call, Pbx, asterisk_binary, free_port
from tests.pbx.asterisk import running_pbx as start_pbx
from tests.storelock import sqlite_locked

BINARY = asterisk_binary()
pytestmark = [
    pytest.mark.skipif(BINARY is None, reason="no Asterisk: set ASTERISK_BIN or put asterisk "
                                              "on the PATH to run the real-PBX tests"),
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(120),
]

RULES = """
default: {destination: "queue:reception"}
lists:
  spam: {file: spam.txt}
rules:
  - {name: spam, field: list.spam, op: eq, value: true, destination: hangup}
  - {name: queue answered, destination: "queue:sales", location: {did: ["0100000001"]}}
  - {name: queue timeout, destination: "queue:support", voicemail: true,
     location: {did: ["0100000002"]}}
  - {name: extension answered, destination: "extension:201", location: {did: ["0100000003"]}}
  - {name: extension no answer, destination: "extension:202", voicemail: true,
     location: {did: ["0100000004"]}}
  - {name: extension busy, destination: "extension:203", voicemail: true,
     location: {did: ["0100000005"]}}
  - {name: voicemail, destination: "voicemail:201", location: {did: ["0100000006"]}}
  - {name: number, destination: "number:+33612345678", location: {did: ["0100000007"]}}
  - {name: rejected, destination: hangup, location: {did: ["0100000008"]}}
  - name: menu key 1
    when: {all: [{field: call.dtmf, op: eq, value: "1"},
                 {field: call.location, op: eq, value: main}]}
    destination: "queue:sales"
  - name: menu
    when: {field: call.location, op: missing}
    destination: "ivr:main"
    audio: menu-prompt
    location: {did: ["0100000009"]}
  - {name: unknown queue, destination: "queue:no-such-queue", location: {did: ["0100000010"]}}
  - {name: unknown menu, destination: "ivr:welcome-new", location: {did: ["0100000011"]}}
  - {name: unknown mailbox, destination: "voicemail:999", location: {did: ["0100000012"]}}
  - {name: menu loop, destination: "ivr:loop", location: {did: ["0100000013"]}}
  - {name: endless menu, destination: "ivr:loop", location: {ivr: [loop]}}
"""
GLOBALS = {
    "CRM_RING_SECONDS": "4",
    "CRM_QUEUE_SECONDS": "4",
    "CRM_DIAL_EXTENSION": "Local/{target}@employees",
    "CRM_DIAL_NUMBER": "Local/{target}@pstn",
}


class Setup:
    def __init__(self, pbx: Pbx, agent: Agent, agi_url: str) -> None:
        self.pbx, self.agent, self.agi_url = pbx, agent, agi_url

    async def api(self, method: str, path: str, body: object = None) -> Any:
        """The agent's HTTP API, with its token."""
        url = f"http://127.0.0.1:{self.agent.http_port}{path}"
        async with aiohttp.ClientSession(headers=auth()) as http, \
                http.request(method, url, json=body) as resp:
            assert resp.status < 300, await resp.text()
            return await resp.json()

    async def delivered(self) -> None:
        """Until the outbox has applied every journaled call to the CRM."""
        assert self.agent.store is not None
        async with asyncio.timeout(10):
            while True:
                stats = await self.agent.store.outbox_stats()
                if not stats.get("pending") and not stats.get("claimed"):
                    return
                await asyncio.sleep(0.05)

    async def journaled(self, call: Call, timeout_s: float = 10.0) -> CallRecord:
        """The call as the agent journaled it from the PBX's AMI events."""
        record = await journaled(self.agent, call, timeout_s)
        record_trace(call, record)
        return record


async def ami_ready(agent: Agent, timeout_s: float = 10.0) -> None:
    """Until the agent is logged in to the PBX's AMI (it starts without waiting for it): a
    call placed before would be journaled from its later events only."""
    assert agent.app is not None
    check = agent.app[READY_CHECKS]["ami"]
    async with asyncio.timeout(timeout_s):
        while True:
            _ok, detail = await check()
            if isinstance(detail, dict) and detail["connected"]:
                return
            await asyncio.sleep(0.05)


async def journaled(agent: Agent, call: Call, timeout_s: float) -> CallRecord:
    """The call once the agent has journaled it as ended."""
    assert agent.store is not None
    async with asyncio.timeout(timeout_s):
        while True:
            record = await agent.store.get_call(call.linkedid)
            if record is not None and record.ended_at is not None:
                return record
            await asyncio.sleep(0.1)


def record_trace(call: Call, record: CallRecord) -> None:
    """With `PBX_RECORD_DIR` set, keep the call's raw AMI stream and the journaled record, the
    makings of a new tests/fixtures/ami trace."""
    folder = os.environ.get("PBX_RECORD_DIR")
    if folder:
        name = os.environ.get("PYTEST_CURRENT_TEST", call.linkedid).split("::")[-1].split(" ")[0]
        (Path(folder) / f"{name}.ami.txt").write_bytes(bytes(call.raw))
        (Path(folder) / f"{name}.expected.json").write_text(json.dumps(
            {"calls": [record.model_dump(mode="json", by_alias=True)]}, indent=2))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    assert BINARY is not None
    root = tmp_path_factory.mktemp("pbx")
    rules = root / "rules"
    shutil.copytree(REPO / "rules", rules)
    (rules / "routing.yaml").write_text(RULES)
    agi_port = free_port()
    agi_url = f"agi://127.0.0.1:{agi_port}"
    async with start_pbx(root / "asterisk", BINARY, {**GLOBALS, "CRM_AGENT": agi_url}) as pbx:
        agent = Agent(agent_config(
            root, CRM_AGENT_RULES__DIR=str(rules), CRM_AGENT_AGI__PORT=str(agi_port),
            CRM_AGENT_AMI__ENABLED="true", CRM_AGENT_AMI__PORT=str(pbx.ami_port),
            CRM_AGENT_AMI__USERNAME=AMI_USER, CRM_AGENT_AMI_SECRET=AMI_SECRET,
            CRM_AGENT_AMI__GRACE_S="0.3"))
        await agent.start()
        try:
            await ami_ready(agent)
            yield Setup(pbx, agent, agi_url)
        finally:
            await agent.stop()


# -- every route type ------------------------------------------------------------------------

async def test_queue_answered(setup: Setup) -> None:
    call = await setup.pbx.ami.call("0100000001", "0612345601")
    assert call.reached("Queue") == ["sales,t,,,4"]
    assert call.reached("VoiceMail") == []
    record = await setup.journaled(call)
    assert (record.answered, record.answered_by, record.queue) == (True, "204", "sales")


async def test_queue_timeout_goes_to_voicemail(setup: Setup) -> None:
    call = await setup.pbx.ami.call("0100000002", "0612345602")
    assert call.reached("Queue") == ["support,t,,,4"]
    assert call.var("QUEUESTATUS") == "TIMEOUT"
    assert call.reached("VoiceMail") == ["100,u"]  # a queue's calls: the default mailbox
    record = await setup.journaled(call)
    assert (record.answered, record.outcome) == (False, "voicemail")


async def test_extension_answered(setup: Setup) -> None:
    call = await setup.pbx.ami.call("0100000003", "0612345603")
    assert call.reached("Dial") == ["Local/201@employees,4"]
    record = await setup.journaled(call)
    assert (record.answered, record.answered_by) == (True, "201")


async def test_extension_answered_then_blind_transferred(setup: Setup) -> None:
    call = await setup.pbx.ami.dial("0100000003", "0612345616")
    leg = await call.event("BridgeEnter", "Local/201@employees")
    answer = await setup.pbx.ami.action("BlindTransfer", Channel=leg["Channel"],
                                        Context="transfer", Exten="204")
    assert answer.get("Response") == "Success", answer
    async with asyncio.timeout(30):
        await call.done.wait()
    assert call.reached("Dial") == ["Local/201@employees,4"]
    record = await setup.journaled(call)
    assert (record.answered, record.answered_by) == (True, "201")
    assert [(t.type, t.to) for t in record.transfers] == [("blind", "204")]


@pytest.mark.parametrize(("did", "status", "option"), [("0100000004", "NOANSWER", "u"),
                                                      ("0100000005", "BUSY", "b")])
async def test_extension_unanswered_goes_to_its_mailbox(setup: Setup, did: str, status: str,
                                                        option: str) -> None:
    call = await setup.pbx.ami.call(did, "0612345604")
    assert call.var("DIALSTATUS") == status
    extension = call.reached("Dial")[0].split("/")[1].split("@")[0]
    assert call.reached("VoiceMail") == [f"{extension},{option}"]
    assert call.var("VMSTATUS") == "SUCCESS"
    record = await setup.journaled(call)
    assert (record.answered, record.outcome, record.rang) == (False, "voicemail", [extension])


async def test_voicemail_route(setup: Setup) -> None:
    call = await setup.pbx.ami.call("0100000006", "0612345606")
    assert call.reached("VoiceMail") == ["201,u"]
    assert call.var("VMSTATUS") == "SUCCESS"
    record = await setup.journaled(call)
    assert (record.answered, record.outcome) == (False, "voicemail")


async def test_number_route_dials_through_the_dial_string(setup: Setup) -> None:
    call = await setup.pbx.ami.call("0100000007", "0612345607")
    assert call.reached("Dial") == ["Local/+33612345678@pstn,4"]
    assert call.var("DIALSTATUS") == "ANSWER"


async def test_hangup_route_rejects(setup: Setup) -> None:
    call = await setup.pbx.ami.call("0100000008", "0612345608")
    assert call.reached("Hangup") == ["21"]
    assert call.reached("Queue") == call.reached("Dial") == []


async def test_ivr_plays_the_audio_reads_a_key_and_routes_on_it(setup: Setup) -> None:
    call = await setup.pbx.ami.call("0100000009", "0612345609", press="1")
    assert call.reached("Read") == ["DTMF,menu-prompt,1,,2,5"]  # the decision's audio
    assert call.reached("AGI")[-1] == f"{setup.agi_url}/dtmf,1,main"
    assert call.reached("Queue") == ["sales,t,,,4"]
    assert call.var("CRM_RULE") == "menu key 1"


# -- nothing is lost -------------------------------------------------------------------------

async def test_unknown_queue_goes_to_the_fallback_queue(setup: Setup) -> None:
    call = await setup.pbx.ami.call("0100000010", "0612345610")
    assert call.reached("Queue") == ["reception,t,,,4"]
    record = await setup.journaled(call)
    assert (record.answered, record.answered_by) == (True, "201")


async def test_unknown_mailbox_goes_to_the_default_mailbox(setup: Setup) -> None:
    call = await setup.pbx.ami.call("0100000012", "0612345612")
    assert call.reached("VoiceMail") == ["100,u"]


async def test_unknown_ivr_menu_in_the_admins_own_context(setup: Setup) -> None:
    await setup.pbx.ami.setvar("CRM_IVR_CONTEXT", "own-menus")
    try:
        call = await setup.pbx.ami.call("0100000011", "0612345611")
    finally:
        await setup.pbx.ami.setvar("CRM_IVR_CONTEXT", "crm-ivr")
    assert call.reached("Queue") == ["reception,t,,,4"]


async def test_a_menu_that_loops_ends_in_the_fallback_queue(setup: Setup) -> None:
    call = await setup.pbx.ami.call("0100000013", "0612345613", timeout_s=80)
    assert len(call.reached("Read")) == 3
    assert call.reached("Queue") == ["reception,t,,,4"]


async def test_agent_down_goes_to_the_fallback_queue_then_voicemail(setup: Setup) -> None:
    await setup.pbx.ami.setvar("CRM_AGENT", f"agi://127.0.0.1:{free_port()}")
    try:
        call = await setup.pbx.ami.call("0100000002", "0612345614")
    finally:
        await setup.pbx.ami.setvar("CRM_AGENT", setup.agi_url)
    assert call.var("AGISTATUS") == "FAILURE"
    assert call.reached("Queue") == ["reception,t,,,4"]
    record = await setup.journaled(call)  # the journal does not depend on FastAGI
    assert (record.answered, record.answered_by) == (True, "201")


async def test_agent_down_inside_an_ivr_menu_goes_to_the_fallback_queue(setup: Setup) -> None:
    """The agent answers the first question, then is gone when the caller presses a key."""
    call = await setup.pbx.ami.dial("0100000009", "0612345620", press="1")
    await call.event("Newexten", "Local/0100000009@from-trunk", app="Read")
    await setup.pbx.ami.setvar("CRM_AGENT", f"agi://127.0.0.1:{free_port()}")
    try:
        async with asyncio.timeout(40):
            await call.done.wait()
    finally:
        await setup.pbx.ami.setvar("CRM_AGENT", setup.agi_url)
    assert call.reached("AGI")[-1].endswith("/dtmf,1,main")
    assert call.var("AGISTATUS") == "FAILURE"
    assert call.reached("Queue") == ["reception,t,,,4"]


async def test_agent_slow_store_still_routes_within_the_deadline(setup: Setup) -> None:
    """The agent's store locked by another process: the lookup times out, the rules still run
    and the caller is routed (CRM_ERROR says why)."""
    db = Path(str(setup.agent.config.store_url).removeprefix("sqlite:///"))
    with sqlite_locked(db):
        call = await setup.pbx.ami.call("0100000001", "0612345615")
    assert call.var("AGISTATUS") == "SUCCESS"
    assert call.var("CRM_ERROR") == "crm-timeout"
    assert call.reached("Queue") == ["sales,t,,,4"]


# -- what the journal writes ------------------------------------------------------------------

async def test_a_spam_caller_is_rejected_and_gets_no_crm_record(setup: Setup) -> None:
    call = await setup.pbx.ami.call("0100000003", "0187654321")  # rules/spam.txt
    assert call.reached("Hangup") == ["21"] and call.reached("Dial") == []
    record = await setup.journaled(call)
    await setup.delivered()
    assert record.caller == "+33187654321"
    assert await setup.api("GET", "/api/contacts?phone=0187654321") == []
    tasks = await setup.api("GET", "/api/tasks?limit=1000")
    assert [t for t in tasks if t.get("call_id") == call.linkedid] == []


async def test_an_invalid_number_is_kept_and_named_on_the_task(setup: Setup) -> None:
    call = await setup.pbx.ami.call("0100000004", "0999999")  # presented, but no phone number
    assert call.reached("VoiceMail") == ["202,u"]
    record = await setup.journaled(call)
    await setup.delivered()
    assert (record.anonymous, record.caller, record.caller_raw) == (False, None, "0999999")
    tasks = await setup.api("GET", "/api/tasks?limit=1000")
    (task,) = [t for t in tasks if t.get("call_id") == call.linkedid]
    assert task["title"] == "Missed call from an invalid number (0999999): call back"


async def test_the_call_carries_the_utm_tags_of_its_did(setup: Setup) -> None:
    call = await setup.pbx.ami.call("0140000000", "0612345618")  # rules/journal.yaml utm_by_did
    assert call.reached("Queue") == ["reception,t,,,4"]
    record = await setup.journaled(call)
    assert record.utm == {"utm_source": "website", "utm_medium": "organic",
                          "utm_campaign": "main-number"}


async def test_an_unknown_script_keeps_what_an_earlier_lookup_set(setup: Setup) -> None:
    await setup.api("POST", "/api/contacts", {"first_name": "Jean", "phones": ["0612345619"]})
    call = await setup.pbx.ami.call("0100000003", "0612345619", context="lookup-then-typo")
    known = [e["Value"] for e in call.events
             if e.get("Event") == "VarSet" and e.get("Variable") == "CRM_KNOWN"]
    assert known == ["1"]  # set by lookup, not reset by the fallback
    assert call.var("CRM_CONTACT_NAME") == "Jean"
    assert call.var("CRM_ERROR") == "unknown-script"
