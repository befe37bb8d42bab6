"""What an on-call engineer relies on when a peer misbehaves: `/readyz` answers while the store
hangs, idle or excess HTTP connections cannot starve FastAGI, bad request lines are logged as
one masked line."""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from agent.ops.http import CHECK_TIMEOUT_S
from tests.conftest import TOKEN, AgentFactory
from tests.net.fake_asterisk import call, load_env
from tests.net.test_serve import REPO, free_port, wait_healthy
from tests.storelock import sqlite_locked


async def readyz(port: int) -> tuple[int, dict[str, object], float]:
    started = time.monotonic()
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{port}/readyz", timeout=aiohttp.ClientTimeout(total=20)) as resp:
        return resp.status, await resp.json(), time.monotonic() - started


async def test_readyz_answers_with_a_reason_while_sqlite_is_locked(
        start_agent: AgentFactory, tmp_path: Path) -> None:
    agent = await start_agent()
    assert agent.http_port is not None
    with sqlite_locked(tmp_path / "agent.db"):
        status, body, took = await readyz(agent.http_port)
    assert status == 503 and body["ready"] is False
    assert took < CHECK_TIMEOUT_S + 1.5
    reasons = json.dumps(body)
    assert "no answer within 2 s" in reasons, body
    assert '"store unreachable: "' not in reasons
    status, body, _ = await readyz(agent.http_port)
    assert status == 200, body  # the lock gone, the store answers again


@pytest.mark.postgres
async def test_readyz_answers_with_a_reason_while_a_postgresql_table_is_locked(
        start_agent: AgentFactory, pg_url: str) -> None:
    import asyncpg

    agent = await start_agent(CRM_AGENT_STORE_URL=pg_url)
    assert agent.http_port is not None
    schema = pg_url.rsplit("search_path=", 1)[1]
    conn = await asyncpg.connect(pg_url.split("?")[0])
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute(f"LOCK TABLE {schema}.outbox IN ACCESS EXCLUSIVE MODE")
        status, body, took = await readyz(agent.http_port)
        await tx.rollback()
    finally:
        await conn.close()
    assert status == 503 and took < CHECK_TIMEOUT_S + 1.5
    assert "no answer within 2 s" in json.dumps(body), body
    status, body, _ = await readyz(agent.http_port)
    assert status == 200, body


async def open_idle(port: int, count: int) -> list[tuple[asyncio.StreamReader,
                                                          asyncio.StreamWriter]]:
    return [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes | None:
    """What the server wrote before closing, or None if it kept the connection open."""
    try:
        return await asyncio.wait_for(reader.read(), seconds)
    except TimeoutError:
        return None


async def test_connections_past_the_cap_get_a_json_503_and_agi_keeps_working(
        start_agent: AgentFactory, caplog: pytest.LogCaptureFixture) -> None:
    agent = await start_agent(CRM_AGENT_HTTP__MAX_CONNECTIONS="20")
    assert agent.http_port is not None and agent.agi is not None
    idle = await open_idle(agent.http_port, 20)
    await asyncio.sleep(0.1)
    extra_reader, extra = (await open_idle(agent.http_port, 1))[0]
    answer = await closed_within(extra_reader, 3)
    extra.close()
    assert answer is not None and answer.startswith(b"HTTP/1.1 503 ")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "overloaded"
    assert "http.max_connections" in caplog.text
    assert (await call(agent.agi.port)).variables["CRM_ROUTE_TYPE"]
    for _reader, writer in idle:
        writer.close()
    await asyncio.sleep(0.2)
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{agent.http_port}/healthz") as resp:
        assert resp.status == 200


@pytest.mark.parametrize("sent", [b"", b"GET /crm?field_name=status HTTP/1.1\r\nHost: x"])
async def test_idle_and_half_sent_requests_are_closed(start_agent: AgentFactory,
                                                      sent: bytes) -> None:
    agent = await start_agent(CRM_AGENT_HTTP__IDLE_TIMEOUT_S="0.5")
    assert agent.http_port is not None
    reader, writer = (await open_idle(agent.http_port, 1))[0]
    writer.write(sent)
    started = time.monotonic()
    assert await closed_within(reader, 5) is not None
    assert time.monotonic() - started < 3
    writer.close()


@pytest.fixture
async def low_fd_agent(
        tmp_path: Path) -> AsyncIterator[tuple[int, int, asyncio.subprocess.Process]]:
    """`crm-agent serve` in a process whose open-file limit is 256, as a small container's."""
    http_port, agi_port = free_port(), free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(f"store: {{url: 'sqlite:///var/agent.db'}}\n"
                      f"http: {{port: {http_port}}}\nagi: {{port: {agi_port}}}\n"
                      f"rules: {{dir: '{REPO / 'rules'}', watch: false}}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "--config", str(config), "serve",
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)))
    try:
        await wait_healthy(http_port, proc)
        yield http_port, agi_port, proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_idle_http_connections_cannot_exhaust_the_fds_fastagi_needs(
        low_fd_agent: tuple[int, int, asyncio.subprocess.Process]) -> None:
    http_port, agi_port, proc = low_fd_agent
    idle = await open_idle(http_port, 300)
    await asyncio.sleep(0.3)
    answers = [await call(agi_port) for _ in range(20)]
    assert all(a.variables.get("CRM_ROUTE_TYPE") for a in answers)
    for _reader, writer in idle:
        writer.close()
    proc.terminate()
    assert proc.stderr is not None
    logs = (await proc.stderr.read()).decode()
    assert "http.max_connections" in logs and "(at most 64 connections)" in logs


async def test_a_rejected_request_line_is_one_masked_line(
        start_agent: AgentFactory, caplog: pytest.LogCaptureFixture) -> None:
    agent = await start_agent()
    assert agent.http_port is not None
    caplog.set_level("DEBUG")
    for line in (b"GET /crm?token=" + TOKEN.encode() + b"&callerid=0612345678\x01 HTTP/1.1",
                 b"GET /crm?token=" + TOKEN.encode() + b"&x=" + b"9" * 9000 + b" HTTP/1.1"):
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", agent.http_port)
            writer.write(line + b"\r\nHost: x\r\n\r\n")
            answer = await reader.read()
            assert answer.startswith(b"HTTP/1.") and answer.split()[1] == b"400", answer
            writer.close()
    text = caplog.text
    assert TOKEN not in text and "0612345678" not in text and "Traceback" not in text
    rejected = [r for r in caplog.records if "rejected a request" in r.getMessage()]
    assert 1 <= len(rejected) <= 2, [r.getMessage() for r in rejected]
    assert all(r.exc_info is None for r in caplog.records if r.name.startswith("agent"))


def metric(text: str, name: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]
    return sum(values)


async def test_crm_timeouts_and_breaker_skips_are_counted(start_agent: AgentFactory,
                                                          tmp_path: Path) -> None:
    """With the store locked, callers time out until the breaker opens, then skip the CRM;
    both show in `/metrics`, the breaker as a gauge, and the sessions are not `ok`."""
    agent = await start_agent(CRM_AGENT_ROUTING__BREAKER_FAILURES="3")
    assert agent.http_port is not None and agent.agi is not None
    base = f"http://127.0.0.1:{agent.http_port}"
    errors = []
    with sqlite_locked(tmp_path / "agent.db"):
        for n in range(6):
            env = load_env().replace(b"agi_callerid: +33612345678",
                                     b"agi_callerid: 069988776%d" % n)
            errors.append((await call(agent.agi.port, env)).variables.get("CRM_ERROR"))
        async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
            text = await resp.text()
    assert errors == ["crm-timeout"] * 3 + ["crm-unavailable"] * 3, errors
    assert metric(text, 'crm_agent_crm_errors_total{reason="crm-timeout"}') == 3
    assert metric(text, 'crm_agent_crm_errors_total{reason="crm-unavailable"}') == 3
    assert metric(text, "crm_agent_crm_breaker_open ") == 1
    assert metric(text, 'crm_agent_agi_sessions_total{result="crm-error"}') == 6
    assert metric(text, 'crm_agent_agi_sessions_total{result="ok"}') == 0
