"""FastAGI against hostile peers (issue #11): bounded replies, `agi.allow`, start-up refusal."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Mapping
from pathlib import Path

import pytest

import agent.pbx.agi.server
from agent.app import Agent, agi_allow
from agent.config import ConfigError, load
from agent.pbx.agi import AgiRequest, AgiSession, Script
from tests.conftest import agent_config
from tests.net.conftest import Serve
from tests.net.fake_asterisk import call, load_env

ROUTE = {"CRM_ROUTE_TYPE": "queue", "CRM_ROUTE_TARGET": "support"}
USAGE_LINE = b"520-Usage: EXEC <application> <options> SECRET-CRM-DATA\n"
BOUND = 64 * 1024  # what "bounded" means here: a few tens of KiB, whatever the peer sends
READ_CHUNK = 256 * 1024  # the most one `data_received` brings (asyncio's read size)

class RecordingSession(AgiSession):
    """An `AgiSession` that records the largest buffer it kept between two reads."""

    largest = 0

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        RecordingSession.largest = max(RecordingSession.largest, len(self._buffer))


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> type[RecordingSession]:
    RecordingSession.largest = 0
    monkeypatch.setattr(agent.pbx.agi.server, "AgiSession", RecordingSession)
    return RecordingSession


def answer(variables: Mapping[str, str], seen: list[AgiRequest] | None = None) -> Script:
    def script(request: AgiRequest) -> Mapping[str, str]:
        if seen is not None:
            seen.append(request)
        return variables

    return script


async def flood(port: int, *, total: int = 4 * 1024 * 1024,
                started: asyncio.Future[None] | None = None,
                gate: asyncio.Event | None = None) -> bytes:
    """A peer that answers the MSet with `520-` lines and never the closing `520 ` line,
    until the agent closes (or resets) the connection.

    Without `started`, it waits for the command first and returns it; with it, it floods as
    soon as the script runs, then sets `gate`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    block = USAGE_LINE * (65536 // len(USAGE_LINE))
    command = b""
    try:
        writer.write(load_env())
        if started is None:
            command = await reader.readuntil(b"\n")
        else:
            await started
        with contextlib.suppress(ConnectionError):
            for _ in range(total // len(block)):
                writer.write(block)
                if gate is None:
                    await writer.drain()
                if reader.at_eof():
                    break
            if gate is not None:
                gate.set()
            await reader.read()  # until the agent closes
        return command
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


# ------------------------------------------------------------------------------ reply bounds


async def test_endless_usage_reply_is_cut_off(
    serve: Serve, recorded: type[RecordingSession], caplog: pytest.LogCaptureFixture
) -> None:
    server = await serve({"route": answer(ROUTE)}, deadline_s=2.0)
    with caplog.at_level(logging.WARNING, logger="agent.agi"):
        command, normal = await asyncio.gather(flood(server.port), call(server.port))
    assert command.startswith(b'EXEC MSet "')
    assert normal.variables == ROUTE and normal.closed_by_agent  # the other caller: answered
    assert server.errors == {"reply-too-long": 1}
    assert server.outcomes == {"failed": 1, "ok": 1}
    assert recorded.largest <= BOUND
    assert server.active == 0
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "SECRET-CRM-DATA" not in caplog.text


async def test_many_bad_peers_at_once_are_a_few_warnings(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    server = await serve({"route": answer(ROUTE)}, deadline_s=2.0)
    with caplog.at_level(logging.DEBUG, logger="agent.agi"):
        await asyncio.gather(*(flood(server.port, total=256 * 1024) for _ in range(20)))
    assert server.errors == {"reply-too-long": 20}  # each one counted in the metrics
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert 1 <= len(warnings) <= 3, warnings
    held = [r for r in caplog.records if r.levelno == logging.DEBUG and "bad reply" in r.msg]
    assert len(held) + len(warnings) == 20  # the rest at debug level


async def test_usage_reply_of_too_many_short_lines(serve: Serve) -> None:
    server = await serve({"route": answer(ROUTE)}, deadline_s=2.0)
    result = await call(server.port, replies=[b"520-\n" * 200])
    assert result.closed_by_agent
    assert server.errors == {"reply-too-long": 1}


async def test_over_long_line_inside_a_usage_reply(serve: Serve) -> None:
    server = await serve({"route": answer(ROUTE)}, deadline_s=2.0, max_line=1024)
    result = await call(server.port, replies=[b"520-Invalid\n " + b"x" * 5000 + b"\n"])
    assert result.closed_by_agent
    assert server.errors == {"bad-reply": 1}


async def test_flood_while_the_script_runs_is_bounded_too(
    serve: Serve, recorded: type[RecordingSession]
) -> None:
    loop = asyncio.get_running_loop()
    started, gate = loop.create_future(), asyncio.Event()

    async def script(request: AgiRequest) -> Mapping[str, str]:
        started.set_result(None)
        await gate.wait()
        return ROUTE

    server = await serve({"route": script}, deadline_s=2.0)
    await flood(server.port, started=started, gate=gate)
    assert server.errors == {"reply-too-long": 1} and server.active == 0
    assert recorded.largest <= BOUND + READ_CHUNK  # reading pauses while the script runs


async def test_usage_reply_in_pieces_is_read_whole(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    usage = (b"520-Invalid command syntax.  Proper usage follows:\n"
             + b" Usage: EXEC <application> <options>\n" * 30 + b"520 End of proper usage.\n")
    server = await serve({"route": answer(ROUTE)})
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    with caplog.at_level(logging.WARNING, logger="agent.agi"):
        try:
            writer.write(load_env())
            assert (await reader.readuntil(b"\n")).startswith(b"EXEC MSet")
            for start in range(0, len(usage), 5):
                writer.write(usage[start : start + 5])
                await writer.drain()
            assert await reader.read() == b""
        finally:
            writer.close()
            await writer.wait_closed()
    assert server.errors == {"command-refused": 1}
    assert "520 Invalid command syntax." in caplog.text


async def test_env_block_split_between_its_two_newlines(serve: Serve) -> None:
    server = await serve({"route": answer(ROUTE)})
    env = load_env()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(env[:-1])
        await writer.drain()
        writer.write(env[-1:])
        command = await reader.readuntil(b"\n")
        writer.write(b"200 result=0\n")
        assert await reader.read() == b""
    finally:
        writer.close()
        await writer.wait_closed()
    assert command.startswith(b'EXEC MSet "')
    assert server.outcomes == {"ok": 1}


async def test_unknown_script_name_is_not_logged(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.net.fake_asterisk import retarget

    server = await serve({"route": answer(ROUTE)})
    with caplog.at_level(logging.WARNING, logger="agent.agi"):
        await call(server.port, retarget(load_env(), "route-jean-dupont-0612345678"))
    assert server.errors == {"unknown-script": 1}
    assert "unknown script (28 chars" in caplog.text
    assert "dupont" not in caplog.text and "0612345678" not in caplog.text


# ------------------------------------------------------------------------------ agi.allow

TEN = [ipaddress.ip_network("10.0.0.0/8")]


async def test_peer_outside_allow_is_closed_unread(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[AgiRequest] = []
    server = await serve({"route": answer(ROUTE, seen)}, allow=TEN)
    with caplog.at_level(logging.DEBUG, logger="agent.agi"):
        results = [await call(server.port) for _ in range(3)]
    assert all(result.commands == [] and result.closed_by_agent for result in results)
    assert seen == []
    assert server.errors == {"forbidden": 3} and server.sessions == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "127.0.0.1" in warnings[0]  # rate-limited
    assert "+33612345678" not in caplog.text


async def test_default_allow_admits_loopback(serve: Serve) -> None:
    server = await serve({"route": answer(ROUTE)})
    result = await call(server.port)
    assert result.variables == ROUTE
    assert not server.errors


@pytest.mark.parametrize(("host", "allowed"), [
    ("127.0.0.1", False), ("10.1.2.3", True), ("::ffff:10.1.2.3", True), ("::1", False),
    ("fe80::1%eth0", False), ("not-an-address", False),
])
def test_allow_matches_addresses(host: str, allowed: bool) -> None:
    assert agent.pbx.agi.server.permitted(host, TEN) is allowed


# ------------------------------------------------------------------------------ start-up

PUBLIC = {"CRM_AGENT_AGI__HOST": "0.0.0.0"}


def test_agi_beyond_loopback_needs_an_explicit_allow(tmp_path: Path) -> None:
    config = load(None, environ={"CRM_AGENT_AGI__HOST": "0.0.0.0"})
    with pytest.raises(ConfigError, match=r"agi\.allow.*CRM_AGENT_AGI__ALLOW"):
        agi_allow(config)
    explicit = load(None, environ={**PUBLIC, "CRM_AGENT_AGI__ALLOW": "[10.0.0.0/8]"})
    assert agi_allow(explicit) == TEN
    yaml = tmp_path / "agent.yaml"
    yaml.write_text("agi: {host: 0.0.0.0, allow: [127.0.0.0/8]}\n")
    assert agi_allow(load(yaml, environ={})) == [ipaddress.ip_network("127.0.0.0/8")]
    assert len(agi_allow(load(None, environ={}))) == 2  # loopback: the default is enough


async def test_agent_refuses_to_start_agi_beyond_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"agi\.allow"):  # before anything is opened
        Agent(agent_config(tmp_path, **PUBLIC))
    allowed = Agent(agent_config(tmp_path, **PUBLIC, CRM_AGENT_AGI__ALLOW="[10.0.0.0/8]"))
    await allowed.start()
    try:
        assert allowed.agi is not None
        assert (await call(allowed.agi.port)).commands == []  # 127.0.0.1 is not in 10/8
    finally:
        await allowed.stop()
