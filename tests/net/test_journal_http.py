"""The journal through the running agent: `POST /events/call` (token and X-Signature),
`GET /api/associate`, signed recording links, AMI wiring, and `kill -9` of `crm-agent serve`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from yarl import URL

from agent.app import Agent
from agent.config import ConfigError
from agent.journal.http import RECORDINGS
from agent.journal.recordings import derive_secret, link, sign
from agent.store import open_store
from tests.conftest import TOKEN, AgentFactory, auth
from tests.net.fake_ami import FakeAmi, message

REPO = Path(__file__).resolve().parents[2]
WEBHOOK_SECRET = "whsec-test"
RECORDING_SECRET = "recsec-test"
WAIT_S = 10.0


@pytest.fixture
async def agent(start_agent: AgentFactory) -> Agent:
    return await start_agent(CRM_AGENT_WEBHOOK_SECRET=WEBHOOK_SECRET,
                             CRM_AGENT_RECORDING_SECRET=RECORDING_SECRET,
                             CRM_AGENT_AGI__ENABLED="false")


@pytest.fixture
async def http(agent: Agent) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{agent.http_port}") as session:
        yield session


def event(call_id: str = "w1", answered_by: str | int | None = 201, **extra: Any
          ) -> dict[str, Any]:
    body: dict[str, Any] = {"call_id": call_id, "direction": "inbound",
                            "caller": "06 12 34 56 78", "did": "01 40 00 00 00",
                            "started_at": "2026-11-30T09:00:00Z",
                            "ended_at": "2026-11-30T09:02:00Z"}
    if answered_by is not None:
        body.update(answered_by=answered_by, answered_at="2026-11-30T09:00:08Z")
    return {**body, **extra}


def signed(body: bytes, *, secret: str = WEBHOOK_SECRET, at: float | None = None
           ) -> dict[str, str]:
    stamp = int(time.time() if at is None else at)
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Signature": f"t={stamp},v1={digest}", "Content-Type": "application/json"}


async def get_json(http: aiohttp.ClientSession, path: str) -> Any:
    async with http.get(path, headers=auth()) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def wait_for(http: aiohttp.ClientSession, path: str, count: int) -> list[dict[str, Any]]:
    """Poll a listing until the background worker has written `count` rows (bounded)."""
    async with asyncio.timeout(WAIT_S):
        while True:
            rows = await get_json(http, path)
            if len(rows) >= count:
                return list(rows)
            await asyncio.sleep(0.01)


# -- POST /events/call ----------------------------------------------------------------------

async def test_a_posted_call_is_journaled_once(http: aiohttp.ClientSession) -> None:
    async with http.post("/events/call", json=event(), headers=auth()) as resp:
        assert resp.status == 202
        assert await resp.json() == {"call_id": "w1", "accepted": True, "status": "queued"}
    (lead,) = await wait_for(http, "/api/leads", 1)
    assert (lead["owner"], lead["utm_campaign"]) == ("201", "main-number")
    async with http.post("/events/call", json=event(), headers=auth()) as resp:
        assert resp.status == 202
        assert await resp.json() == {"call_id": "w1", "accepted": False, "status": "duplicate"}
    (row,) = await get_json(http, "/api/calls?caller=0612345678")
    assert (row["caller"], row["did"], row["answered_by"]) == (
        "+33612345678", "+33140000000", "201")
    assert row["lead_id"] == lead["id"] and row["contact_id"] == lead["contact_id"]
    assert len(await get_json(http, "/api/leads")) == 1
    async with http.get("/metrics") as resp:
        assert 'crm_agent_calls_journaled_total{outcome="answered"} 1.0' in await resp.text()


async def test_readyz_reports_the_outbox(http: aiohttp.ClientSession) -> None:
    async with http.post("/events/call", json=event(answered_by=None), headers=auth()):
        pass
    await wait_for(http, "/api/tasks", 1)
    async with http.get("/readyz") as resp:
        body = await resp.json()
    assert resp.status == 200 and body["ready"] is True
    outbox = body["journal"]["outbox"]
    assert (outbox["pending"], outbox["dead"], outbox["delivered"]) == (0, 0, 1)
    assert body["journal"]["error"] is None


@pytest.mark.parametrize(("headers", "status", "code"), [
    ({}, 401, "unauthorized"),
    ({"Authorization": "Bearer wrong"}, 403, "forbidden"),
    ("valid", 202, None),
    ("bad", 401, "bad-signature"),
    ("expired", 401, "bad-signature"),
    ("other body", 401, "bad-signature"),
    ("other secret", 401, "bad-signature"),
])
async def test_webhook_auth(http: aiohttp.ClientSession, headers: Any, status: int,
                            code: str | None) -> None:
    body = json.dumps(event()).encode()
    variants = {
        "valid": signed(body), "expired": signed(body, at=time.time() - 600),
        "bad": {"X-Signature": "t=1,v1=00", "Content-Type": "application/json"},
        "other body": signed(body + b" "), "other secret": signed(body, secret="nope")}
    sent = variants[headers] if isinstance(headers, str) else headers
    async with http.post("/events/call", data=body, headers=sent) as resp:
        assert resp.status == status, await resp.text()
        if code is not None:
            assert (await resp.json())["error"] == code
    assert len(await get_json(http, "/api/calls")) == (1 if status == 202 else 0)


@pytest.mark.parametrize(("body", "status", "detail"), [
    (b"not json", 400, "body is not valid JSON"),
    (b"[1, 2]", 400, "body must be a JSON object"),
    (json.dumps({"caller": "0612345678"}).encode(), 422, "call_id: Field required"),
    (json.dumps({**event(), "answerd_by": 201}).encode(), 422, "answerd_by: unknown key"),
    (json.dumps({**event(), "direction": "sideways"}).encode(), 422, "direction"),
    (json.dumps({**event(), "ended_at": "yesterday"}).encode(), 422, "ended_at"),
])
async def test_garbage_is_refused_and_nothing_is_stored(http: aiohttp.ClientSession,
                                                        body: bytes, status: int,
                                                        detail: str) -> None:
    async with http.post("/events/call", data=body,
                         headers={**auth(), "Content-Type": "application/json"}) as resp:
        assert resp.status == status
        assert detail in (await resp.json())["detail"]
    assert await get_json(http, "/api/calls") == []


async def test_withheld_caller_gets_a_senior_task_and_no_contact(http: aiohttp.ClientSession
                                                                 ) -> None:
    async with http.post("/events/call", json=event("anon", None, caller="anonymous"),
                         headers=auth()) as resp:
        assert resp.status == 202
    (task,) = await wait_for(http, "/api/tasks?assignee=203&status=open", 1)
    assert task["title"] == "Missed call from a withheld number: call back"
    assert task["due_at"] == "2026-11-30T13:02:00Z" and task["contact_id"] is None
    assert await get_json(http, "/api/contacts") == []
    (row,) = await get_json(http, "/api/calls")
    assert row["anonymous"] is True and row["caller"] is None


async def test_a_number_that_is_not_valid_is_kept_and_named(http: aiohttp.ClientSession
                                                             ) -> None:
    async with http.post("/events/call", json=event("bad", None, caller="12345"),
                         headers=auth()) as resp:
        assert resp.status == 202
    (task,) = await wait_for(http, "/api/tasks?assignee=203&status=open", 1)
    assert task["title"] == "Missed call from an invalid number (12345): call back"
    assert "from an invalid number (12345)" in task["description"]
    (row,) = await get_json(http, "/api/calls")
    assert (row["anonymous"], row["caller"], row["caller_raw"]) == (False, None, "12345")


async def test_a_late_answer_updates_a_waiting_call(http: aiohttp.ClientSession) -> None:
    ringing = {"call_id": "r1", "caller": "0033612345678", "did": "0140000000",
               "started_at": "2026-11-30T09:00:00"}
    async with http.post("/events/call", json=ringing, headers=auth()) as resp:
        assert (await resp.json())["status"] == "waiting"
    ended = {"call_id": "r1", "answered_by": "202", "answered_at": "2026-11-30T09:00:04",
             "ended_at": "2026-11-30T09:01:00", "recording_url": "https://pbx/rec/r1.wav"}
    async with http.post("/events/call", json=ended, headers=auth()) as resp:
        assert (await resp.json())["status"] == "queued"
    (lead,) = await wait_for(http, "/api/leads", 1)
    assert lead["owner"] == "202"
    (row,) = await get_json(http, "/api/calls")
    assert row["started_at"] == "2026-11-30T09:00:00Z" and row["recording"] == (
        "https://pbx/rec/r1.wav")


# -- GET /api/associate ---------------------------------------------------------------------

async def test_associate(http: aiohttp.ClientSession) -> None:
    org = await post(http, "/api/organizations", {"name": "ACME"})
    jean = await post(http, "/api/contacts", {"first_name": "Jean", "phones": ["0612345678"],
                                              "emails": ["jean@acme.test"], "owner": "204"})
    anne = await post(http, "/api/contacts", {"first_name": "Anne", "phones": ["0612345678"],
                                              "organization_id": org["id"]})
    lead = await post(http, "/api/leads", {"contact_id": jean["id"], "owner": "202"})
    body = await get_json(http, "/api/associate?phone=%2B33%206%2012%2034%2056%2078")
    assert body["contact"]["id"] == anne["id"] and body["account"]["name"] == "ACME"
    assert body["lead"]["id"] == lead["id"] and (body["owner"], body["owner_source"]) == (
        "202", "lead")
    assert sorted(body["contacts"]) == sorted([jean["id"], anne["id"]])
    by_mail = await get_json(http, "/api/associate?email=JEAN@acme.test&at=2026-01-01T10:00:00")
    assert by_mail["contact"]["id"] == jean["id"] and by_mail["at"].startswith("2026-01-01")
    for query, status in [("phone=abc", 422), ("", 400), ("phone=0612345678&at=soon", 400)]:
        async with http.get(f"/api/associate?{query}", headers=auth()) as resp:
            assert resp.status == status
    async with http.get("/api/associate?phone=0612345678") as resp:
        assert resp.status == 401


async def post(http: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(path, json=body, headers=auth()) as resp:
        assert resp.status == 201, await resp.text()
        return dict(await resp.json())


# -- recordings -----------------------------------------------------------------------------

def recordings_dir(agent: Agent) -> Path:
    directory = agent.config.path(agent.config.recordings.dir)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def local(url: str) -> URL:
    """The path and query of a link (the public URL points at the configured host)."""
    parsed = URL(url)
    return URL.build(path=parsed.raw_path, query_string=parsed.raw_query_string, encoded=True)


async def test_the_link_in_the_task_streams_the_recording(agent: Agent,
                                                          http: aiohttp.ClientSession) -> None:
    audio = os.urandom(200_000)
    (recordings_dir(agent) / "in-0140000000-42.wav").write_bytes(audio)
    first = event("v0", 201)
    again = event("v1", 202, recording_url="/var/spool/asterisk/monitor/in-0140000000-42.wav")
    for body in (first, again):
        async with http.post("/events/call", json=body, headers=auth()) as resp:
            assert resp.status == 202
    done, review = await wait_for(http, "/api/tasks", 2)
    assert done["recording_url"] == review["recording_url"]
    assert done["recording_url"].startswith(
        f"{agent.config.http.public_url}/recordings/in-0140000000-42.wav?exp=")
    async with http.get(local(done["recording_url"])) as resp:
        assert resp.status == 200 and await resp.read() == audio


async def test_recording_links_refuse_bad_signatures_and_escapes(
        agent: Agent, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    directory = recordings_dir(agent)
    (directory / "a.wav").write_bytes(b"A")
    (directory / "b.wav").write_bytes(b"B")
    (directory / "day").mkdir()
    (directory / "day" / "c.wav").write_bytes(b"C")
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("top secret")
    (directory / "escape.wav").symlink_to(secret_file)
    key, now = RECORDING_SECRET.encode(), time.time()

    def url(rid: str, *, at: float = now, ttl: float = 3600) -> URL:
        return local(link("http://x", rid, ttl, key, now=at))

    good = url("a.wav")
    tampered = URL(str(good).replace("/a.wav", "/b.wav"))
    cases = [
        (good, 200, b"A"), (url("day/c.wav"), 200, b"C"),
        (url("a.wav", at=now - 7200), 403, None),  # expired
        (tampered, 403, None),  # signed for another file
        (good.update_query(sig="0" * 64), 403, None),
        (good.update_query(exp=str(int(now) + 999_999)), 403, None),  # longer life
        (URL("/recordings/a.wav"), 403, None),
        (url("missing.wav"), 404, None),
        (url("escape.wav"), 404, None),  # a symlink out of the directory
        (url("../secret.txt"), 404, None), (url("day/../../secret.txt"), 404, None),
        (url("/etc/passwd"), 404, None),
        (URL(f"/recordings/..%2Fsecret.txt?exp={int(now) + 60}&sig="
             f"{sign('../secret.txt', int(now) + 60, key)}", encoded=True), 404, None),
        (URL("/recordings/..%2Fsecret.txt", encoded=True), 403, None),
    ]
    for target, status, content in cases:
        async with http.get(target) as resp:
            assert resp.status == status, target
            if content is not None:
                assert await resp.read() == content
            else:
                assert b"secret" not in await resp.read()


async def test_without_a_recording_secret_links_derive_from_the_token(
        start_agent: AgentFactory) -> None:
    agent = await start_agent(CRM_AGENT_AGI__ENABLED="false")
    assert agent.app is not None
    links = agent.app[RECORDINGS]
    assert links.secret == derive_secret(TOKEN) and links.secret != TOKEN.encode()
    query = URL(link("http://x", "x.wav", 60, derive_secret(TOKEN), now=time.time())).query
    assert links.verify("x.wav", query["exp"], query["sig"])
    assert not links.verify("x.wav", query["exp"], sign("x.wav", int(query["exp"]), b"other"))


# -- AMI ------------------------------------------------------------------------------------

async def test_calls_from_ami_are_journaled(start_agent: AgentFactory) -> None:
    trace = (REPO / "tests/fixtures/ami/01_inbound_direct_answered.ami.txt").read_bytes()
    async with FakeAmi() as ami:
        agent = await start_agent(
            CRM_AGENT_AGI__ENABLED="false", CRM_AGENT_AMI__ENABLED="true",
            CRM_AGENT_AMI__PORT=str(ami.port), CRM_AGENT_AMI__SECRET="s3cret",
            CRM_AGENT_AMI__GRACE_S="0.05")
        async with asyncio.timeout(WAIT_S):
            session = await ami.sessions.get()
        await session.push(trace)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{agent.http_port}") as http:
            (lead,) = await wait_for(http, "/api/leads", 1)
            (row,) = await get_json(http, "/api/calls")
            async with http.get("/readyz") as resp:
                ready = await resp.json()
        assert (lead["owner"], lead["fields"]["call_id"]) == ("201", "1796088499.2")
        assert row["lead_id"] == lead["id"] and row["answered_by"] == "201"
        assert ready["ami"]["connected"] is True
        assert agent.services is not None
        assert agent.services.queues.snapshot() == {}  # the live board: no queue events here
        await agent.stop()


async def ami_agent(start_agent: AgentFactory, ami: FakeAmi, **env: str) -> Agent:
    return await start_agent(
        CRM_AGENT_AGI__ENABLED="false", CRM_AGENT_AMI__ENABLED="true",
        CRM_AGENT_AMI__PORT=str(ami.port), CRM_AGENT_AMI__SECRET="s3cret", **env)


def before_first_hangup(trace: bytes, extra: bytes = b"") -> tuple[bytes, bytes]:
    at = trace.index(b"Event: Hangup")
    return trace[:at] + extra, trace[at:]


async def test_ami_calls_carry_the_utm_tags_of_their_did_and_channel(
        start_agent: AgentFactory) -> None:
    trace = (REPO / "tests/fixtures/ami/02_inbound_queue_answered.ami.txt").read_bytes()
    tagged = message(("Event", "VarSet"), ("Channel", "Local/0140000000@from-trunk-0000003a;2"),
                     ("Uniqueid", "1796088768.117"), ("Linkedid", "1796088768.116"),
                     ("Variable", "__CRM_UTM_TERM"), ("Value", "loft"))
    async with FakeAmi() as ami:
        agent = await ami_agent(start_agent, ami, CRM_AGENT_AMI__GRACE_S="0.05")
        async with asyncio.timeout(WAIT_S):
            session = await ami.sessions.get()
        await session.push(b"".join(before_first_hangup(trace, tagged)))
        async with aiohttp.ClientSession(f"http://127.0.0.1:{agent.http_port}") as http:
            (row,) = await wait_for(http, "/api/calls", 1)
            (lead,) = await wait_for(http, "/api/leads", 1)
        await agent.stop()
    assert row["utm"] == {"utm_source": "website", "utm_medium": "organic",
                          "utm_campaign": "main-number", "utm_term": "loft"}
    assert (lead["utm_campaign"], lead["fields"]["utm_term"]) == ("main-number", "loft")


async def test_ami_max_idle_s_ends_a_call_whose_hangup_never_came(
        start_agent: AgentFactory) -> None:
    trace = (REPO / "tests/fixtures/ami/01_inbound_direct_answered.ami.txt").read_bytes()
    talking, _ = before_first_hangup(trace)
    async with FakeAmi() as ami:
        agent = await ami_agent(start_agent, ami, CRM_AGENT_AMI__MAX_IDLE_S="0.2")
        async with asyncio.timeout(WAIT_S):
            session = await ami.sessions.get()
        await session.push(talking)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{agent.http_port}") as http:
            (row,) = await wait_for(http, "/api/calls", 1)
        await agent.stop()
    last = talking.rsplit(b"Timestamp: ", 1)[1].split(b"\r\n", 1)[0].decode()
    assert row["answered_by"] == "201"
    assert row["ended_at"] == datetime.fromtimestamp(float(last), UTC).isoformat().replace(
        "+00:00", "Z")


# -- kill -9 --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """`python -m agent serve` in a subprocess, on a config file in tmp_path."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path, self.port = tmp_path, free_port()
        self.db = tmp_path / "agent.db"
        self.rules = tmp_path / "rules"
        shutil.copytree(REPO / "rules", self.rules)
        self.proc: asyncio.subprocess.Process | None = None
        self.runs = 0

    def write_config(self, **outbox: Any) -> Path:
        config = {"store": {"url": f"sqlite:///{self.db}"}, "log_format": "text",
                  "log_level": "WARNING",
                  "http": {"port": self.port, "token": TOKEN}, "agi": {"enabled": False},
                  "rules": {"dir": str(self.rules), "watch": False},
                  "outbox": {"lease_s": 0.5, "poll_s": 0.05, **outbox}}
        path = self.tmp_path / "agent.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    async def start(self, **outbox: Any) -> None:
        config = self.write_config(**outbox)
        self.runs += 1
        log = (self.tmp_path / f"agent-{self.runs}.log").open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_AGENT_")}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "-c", str(config), "serve", cwd=REPO,
            stdout=log, stderr=log, env=env)
        log.close()
        async with asyncio.timeout(WAIT_S), aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(f"{self.url}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                assert self.proc.returncode is None, self.logs()
                await asyncio.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")
                         for p in sorted(self.tmp_path.glob("agent-*.log")))

    async def stop(self, sig: signal.Signals) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        async with asyncio.timeout(WAIT_S):
            return await self.proc.wait()

    def outbox(self) -> dict[str, int]:
        with sqlite3.connect(self.db, timeout=5) as conn:
            rows = conn.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status")
            return {str(status): int(count) for status, count in rows}

    def count(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db, timeout=5) as conn:
            return list(conn.execute(sql))


async def until(check: Callable[[], bool], timeout_s: float) -> None:
    """Poll the store of the agent under test (another process) until `check` holds."""
    async with asyncio.timeout(timeout_s):
        while True:
            if check():
                return
            await asyncio.sleep(0.005)


async def post_calls(url: str, calls: list[dict[str, Any]]) -> None:
    async with aiohttp.ClientSession(url, headers=auth()) as http:
        for body in calls:
            async with http.post("/events/call", json=body) as resp:
                assert resp.status == 202, await resp.text()


def crash_calls(first: int, count: int) -> list[dict[str, Any]]:
    """Distinct callers (so the outcome of each call does not depend on delivery order);
    every third call is missed and gives the senior manager a task."""
    return [event(f"k{i}", None if i % 3 == 0 else 201 + i % 2,
                  caller=f"+3361234{i:04d}") for i in range(first, first + count)]


async def test_kill_9_loses_nothing_and_applies_nothing_twice(tmp_path: Path) -> None:
    served = Served(tmp_path)
    # 1. accepted but not delivered (deliver: false), then kill -9
    await served.start(deliver=False)
    phase_one = crash_calls(0, 40)
    await post_calls(served.url, phase_one + phase_one[:5])  # five replays
    assert await served.stop(signal.SIGKILL) == -signal.SIGKILL
    assert served.outbox() == {"pending": 40}
    # 2. delivering one row at a time; kill -9 as soon as delivery is under way
    await served.start(batch=1)
    phase_two = crash_calls(40, 160)
    await post_calls(served.url, phase_two)
    await until(lambda: served.outbox().get("done", 0) >= 1, WAIT_S)
    assert await served.stop(signal.SIGKILL) == -signal.SIGKILL
    left = served.outbox()
    assert left.get("pending", 0) + left.get("claimed", 0) > 0, left
    # 3. restart: everything is delivered exactly once, then a clean SIGTERM
    await served.start()
    await until(lambda: set(served.outbox()) == {"done"}, WAIT_S * 3)
    assert await served.stop(signal.SIGTERM) == 0, served.logs()
    assert served.outbox() == {"done": 200}
    calls = phase_one + phase_two
    missed = {c["call_id"] for c in calls if "answered_by" not in c}
    leads = served.count("SELECT json_extract(data, '$.fields.call_id'), COUNT(*) FROM leads "
                         "GROUP BY 1")
    tasks = served.count("SELECT call_id, assignee, COUNT(*) FROM tasks GROUP BY 1, 2")
    assert dict(leads) == {c["call_id"]: 1 for c in calls}
    assert sorted(tasks) == sorted((call_id, "203", 1) for call_id in missed)
    assert served.count("SELECT COUNT(*), COUNT(DISTINCT data) FROM contacts") == [(200, 200)]
    assert served.count("SELECT COUNT(*) FROM calls WHERE lead_id IS NULL") == [(0,)]


async def test_after_kill_9_an_agent_takes_back_its_own_claims_at_once(tmp_path: Path) -> None:
    """Rows left claimed by a dead agent wait out their lease (60 s here) for any other
    agent, but the same agent id, restarted, delivers them at once."""
    served = Served(tmp_path)
    await served.start(deliver=False, agent_id="agent-a")
    await post_calls(served.url, crash_calls(0, 10))
    assert await served.stop(signal.SIGKILL) == -signal.SIGKILL
    store = await open_store(f"sqlite:///{served.db}")
    try:  # the rows as agent-a left them: claimed for 60 s when it died mid-delivery
        assert len(await store.claim(10, lease_s=60, claimer="agent-a")) == 10
    finally:
        await store.close()
    await served.start(lease_s=60, agent_id="agent-b")
    await asyncio.sleep(1.0)  # 20 polls
    assert served.outbox() == {"claimed": 10}  # not agent-b's: their lease still runs
    assert await served.stop(signal.SIGKILL) == -signal.SIGKILL
    started = time.monotonic()
    await served.start(lease_s=60, agent_id="agent-a")
    await until(lambda: served.outbox() == {"done": 10}, WAIT_S)
    assert time.monotonic() - started < WAIT_S < 60
    assert "10 rows this agent (agent-a) held" in served.logs()
    assert await served.stop(signal.SIGTERM) == 0, served.logs()
    assert served.count("SELECT COUNT(*) FROM leads") == [(10,)]


async def test_a_broken_journal_file_stops_the_start_with_file_line_and_key(
        start_agent: AgentFactory, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    (rules / "journal.yaml").write_text("employees:\n  - {extension: 201, role: boss}\n")
    with pytest.raises(ConfigError, match=r"journal.yaml:2: employees.0.name: Field required"):
        await start_agent(CRM_AGENT_RULES__DIR=str(rules), CRM_AGENT_AGI__ENABLED="0")


async def test_a_blocklist_list_routing_yaml_lacks_is_reported_at_start(
        start_agent: AgentFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    journal = rules / "journal.yaml"
    journal.write_text(journal.read_text().replace("blocklist_lists: [spam]",
                                                   "blocklist_lists: [spam, robots]"))
    agent = await start_agent(CRM_AGENT_RULES__DIR=str(rules), CRM_AGENT_AGI__ENABLED="0")
    await agent.stop()
    assert "blocklist_lists names 'robots', which routing.yaml does not define" in caplog.text


async def test_a_caller_the_rules_hang_up_on_as_spam_gets_no_crm_record(
        agent: Agent, http: aiohttp.ClientSession) -> None:
    robot = event("robot", None, caller="+33 1 84 88 00 00")  # rules/spam.txt
    for body in (robot, event("person", None)):
        async with http.post("/events/call", json=body, headers=auth()) as resp:
            assert resp.status == 202
    (lead,) = await wait_for(http, "/api/leads", 1)  # delivered in order: the robot first
    assert agent.store is not None and await agent.store.outbox_stats() == {"done": 2}
    assert lead["fields"]["call_id"] == "person"
    assert [len(await get_json(http, f"/api/{kind}")) for kind in
            ("contacts", "organizations", "tasks")] == [1, 1, 1]
    calls = {row["call_id"]: row for row in await get_json(http, "/api/calls")}
    assert calls["robot"]["caller"] == "+33184880000" and calls["robot"]["lead_id"] is None
