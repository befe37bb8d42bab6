"""AgiServer over real TCP on 127.0.0.1, driven by a fake Asterisk replaying real env blocks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from types import MappingProxyType
from typing import Any

import pytest

from agent.pbx.agi import AgiRequest, Script
from tests.net.conftest import DEFAULT, Serve
from tests.net.fake_asterisk import (
    DEAD,
    DTMF_ENV,
    OK,
    ROUTE_ENV,
    call,
    channel_variables,
    load_env,
    retarget,
)

ROUTE = {"CRM_ROUTE_TYPE": "queue", "CRM_ROUTE_TARGET": "support", "CRM_RULE": "vip"}
MARGIN_S = 0.1

def answer(variables: Mapping[str, str], seen: list[AgiRequest] | None = None) -> Script:
    async def script(request: AgiRequest) -> Mapping[str, str]:
        if seen is not None:
            seen.append(request)
        return variables

    return script


def gated(started: asyncio.Future[None], gate: asyncio.Event) -> Script:
    """A script that answers `ROUTE` once `gate` is set; `started` learns that it runs."""

    async def script(request: AgiRequest) -> Mapping[str, str]:
        started.set_result(None)
        await gate.wait()
        return ROUTE

    return script


def hang(started: asyncio.Future[None], outcome: asyncio.Future[str] | None = None) -> Script:
    """A script that never answers; `outcome` learns whether it was cancelled."""

    async def script(request: AgiRequest) -> Mapping[str, str]:
        started.set_result(None)
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            if outcome is not None:
                outcome.set_result("cancelled")
            raise
        return {}

    return script


# ------------------------------------------------------------------------------ dispatch


async def test_route_sets_every_variable_in_one_mset(serve: Serve) -> None:
    seen: list[AgiRequest] = []
    server = await serve({"route": answer(ROUTE, seen)})
    result = await call(server.port, load_env(ROUTE_ENV))
    assert len(result.commands) == 1
    assert result.commands[0].startswith(b'EXEC MSet "')
    assert result.variables == ROUTE
    assert result.closed_by_agent
    assert seen[0].script == "route" and seen[0].args == ()
    assert seen[0].callerid == "+33612345678"
    assert server.outcomes["ok"] == 1 and not server.errors


async def test_dtmf_gets_its_args(serve: Serve) -> None:
    seen: list[AgiRequest] = []
    server = await serve({"route": answer({}), "dtmf": answer({"CRM_ROUTE_TYPE": "ivr"}, seen)})
    result = await call(server.port, load_env(DTMF_ENV))
    assert seen[0].args == ("5", "main")
    assert seen[0].dnid == "0140000000"
    assert result.variables == {"CRM_ROUTE_TYPE": "ivr"}


async def test_lookup_dispatched_by_script_name(serve: Serve) -> None:
    routes: list[AgiRequest] = []
    lookups: list[AgiRequest] = []
    server = await serve({
        "route": answer(ROUTE, routes),
        "lookup": answer({"CRM_KNOWN": "1", "CRM_CONTACT_NAME": "Dupont, Jean"}, lookups),
    })
    result = await call(server.port, retarget(load_env(ROUTE_ENV), "lookup"))
    assert not routes and lookups[0].script == "lookup"
    assert result.variables == {"CRM_KNOWN": "1", "CRM_CONTACT_NAME": "Dupont, Jean"}


async def test_empty_answer_sends_no_command(serve: Serve) -> None:
    server = await serve({"route": answer({})})
    result = await call(server.port)
    assert result.commands == [] and result.closed_by_agent
    assert server.outcomes["ok"] == 1


async def test_unknown_script(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    server = await serve({"route": answer(ROUTE)})
    with caplog.at_level(logging.WARNING, logger="agent.agi"):
        result = await call(server.port, retarget(load_env(ROUTE_ENV), "nope"))
    assert result.variables == {**DEFAULT, "CRM_ERROR": "unknown-script"}
    assert len(result.commands) == 1
    assert server.errors["unknown-script"] == 1 and server.outcomes["fallback"] == 1
    assert "unknown script (4 chars: ****;" in caplog.text and "nope" not in caplog.text
    assert "+33612345678" not in caplog.text


# ------------------------------------------------------------------------------ deadline


async def test_hanging_script_answers_within_deadline(serve: Serve) -> None:
    loop = asyncio.get_running_loop()
    started, outcome = loop.create_future(), loop.create_future()
    server = await serve({"route": hang(started, outcome)}, deadline_s=0.2)
    result = await call(server.port)
    assert result.answer_s < 0.2 + MARGIN_S
    assert result.closed_at - result.connected_at < 0.2 + MARGIN_S
    assert result.variables == {**DEFAULT, "CRM_ERROR": "timeout"}
    assert await outcome == "cancelled"
    assert server.errors["timeout"] == 1


async def test_raising_script_falls_back_and_server_goes_on(serve: Serve) -> None:
    async def broken(request: AgiRequest) -> Mapping[str, str]:
        raise RuntimeError("CRM said +33612345678 is weird")

    server = await serve({"route": broken, "lookup": answer({"CRM_KNOWN": "0"})})
    result = await call(server.port)
    assert result.variables == {**DEFAULT, "CRM_ERROR": "internal-error"}
    again = await call(server.port, retarget(load_env(), "lookup"))
    assert again.variables == {"CRM_KNOWN": "0"}
    assert server.errors["internal-error"] == 1


async def test_bad_variable_name_from_script_is_an_internal_error(serve: Serve) -> None:
    server = await serve({"route": answer({"BAD NAME": "1"})})
    result = await call(server.port)
    assert result.variables == {**DEFAULT, "CRM_ERROR": "internal-error"}


async def test_broken_fallback_still_reports_the_error(serve: Serve) -> None:
    def broken(request: AgiRequest, reason: str) -> Mapping[str, str]:
        raise KeyError(reason)

    server = await serve({}, fallback=broken)
    result = await call(server.port)
    assert result.variables == {"CRM_ERROR": "unknown-script"}


async def test_unsafe_values_do_not_break_the_protocol(serve: Serve) -> None:
    name = 'O"Brien\\ (SARL\r\nEXEC Dial PJSIP/666,x'
    server = await serve({"route": answer({"CRM_CONTACT_NAME": name, "CRM_A": "1"})})
    result = await call(server.port)
    assert len(result.commands) == 1
    assert result.variables == {"CRM_CONTACT_NAME": "O'Brien (SARL  EXEC Dial PJSIP/666,x",
                                "CRM_A": "1"}
    assert server.outcomes["ok"] == 1


# ------------------------------------------------------------------------------ bad peers


async def test_half_sent_header_then_eof(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    server = await serve({"route": answer(ROUTE)})
    with caplog.at_level(logging.WARNING, logger="agent.agi"):
        result = await call(server.port, load_env()[:100], write_eof=True)
    assert result.commands == [] and result.closed_by_agent
    assert server.errors["header-eof"] == 1
    assert "closed after 100 header bytes" in caplog.text


async def test_connect_and_close_is_quiet(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    server = await serve({"route": answer(ROUTE)})
    with caplog.at_level(logging.WARNING, logger="agent.agi"):
        await call(server.port, b"", write_eof=True)
    assert server.outcomes["probe"] == 1 and not server.errors
    assert not caplog.records


async def test_silent_client_times_out(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    server = await serve({"route": answer(ROUTE)}, header_timeout_s=0.1)
    with caplog.at_level(logging.WARNING, logger="agent.agi"):
        result = await call(server.port, b"agi_network: yes\n")
    assert result.commands == [] and result.closed_by_agent
    assert result.closed_at - result.connected_at < 0.1 + MARGIN_S
    assert server.errors["header-timeout"] == 1
    assert "no header within 0.1s" in caplog.text


async def test_over_long_line(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    server = await serve({"route": answer(ROUTE)}, max_line=1024)
    block = b"agi_network_script: route\nagi_calleridname: " + b"x" * 5000 + b"\n\n"
    with caplog.at_level(logging.WARNING, logger="agent.agi"):
        result = await call(server.port, block)
    assert result.commands == [] and result.closed_by_agent
    assert server.errors["header-too-long"] == 1
    assert "header over 1024 bytes" in caplog.text


async def test_malformed_env(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    server = await serve({"route": answer(ROUTE)})
    with caplog.at_level(logging.WARNING, logger="agent.agi"):
        result = await call(server.port, b"GET / HTTP/1.0\nHost: agent\n\n")
    assert result.commands == [] and result.closed_by_agent
    assert server.errors["malformed"] == 1
    assert "malformed env: env line 1" in caplog.text


async def test_dead_channel_511_is_quiet(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    server = await serve({"route": answer(ROUTE)})
    with caplog.at_level(logging.WARNING, logger="agent.agi"):
        result = await call(server.port, replies=[DEAD])
    assert len(result.commands) == 1 and result.closed_by_agent
    assert server.outcomes["hangup"] == 1 and not server.errors
    assert not caplog.records


async def test_hangup_before_the_command_is_quiet(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    server = await serve({"route": answer(ROUTE)})
    with caplog.at_level(logging.WARNING, logger="agent.agi"):
        result = await call(server.port, hangup_first=True)
    assert result.closed_by_agent
    assert server.outcomes["hangup"] == 1 and not server.errors
    assert not caplog.records


async def test_usage_reply_is_logged(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    usage = (b"520-Invalid command syntax.  Proper usage follows:\n Usage: EXEC <app>\n"
             b"520 End of proper usage.\n")
    server = await serve({"route": answer(ROUTE)})
    with caplog.at_level(logging.WARNING, logger="agent.agi"):
        result = await call(server.port, replies=[usage])
    assert result.closed_by_agent
    assert server.errors["command-refused"] == 1
    assert "520 Invalid command syntax." in caplog.text


async def test_client_disconnects_mid_session(serve: Serve) -> None:
    started, gate = asyncio.get_running_loop().create_future(), asyncio.Event()
    server = await serve({"route": gated(started, gate)}, deadline_s=5.0)
    result = await call(server.port, disconnect=started)
    assert result.commands == []
    gate.set()
    await server.stop(grace_s=5.0)  # returns once the session has ended
    assert server.outcomes["hangup"] == 1 and not server.errors
    assert server.active == 0


# ------------------------------------------------------------------------------ load, stop


async def test_many_concurrent_sessions(serve: Serve) -> None:
    server = await serve({"route": answer(ROUTE)})
    env = load_env()
    results = await asyncio.gather(*(call(server.port, env) for _ in range(300)))
    assert all(result.variables == ROUTE for result in results)
    assert server.sessions == 300 and server.outcomes["ok"] == 300


async def test_overload_answers_with_the_fallback(serve: Serve) -> None:
    loop = asyncio.get_running_loop()
    started = loop.create_future()
    server = await serve({"route": hang(started)}, limit_clients=1, deadline_s=5.0)
    first = asyncio.create_task(call(server.port))
    await started
    result = await call(server.port)
    assert result.variables == {**DEFAULT, "CRM_ERROR": "overload"}
    await server.stop(grace_s=0.0)
    assert (await first).commands == []


async def test_graceful_stop_drains_in_flight(serve: Serve) -> None:
    started, gate = asyncio.get_running_loop().create_future(), asyncio.Event()
    server = await serve({"route": gated(started, gate)}, deadline_s=5.0)
    in_flight = asyncio.create_task(call(server.port))
    await started
    stopping = asyncio.create_task(server.stop(grace_s=5.0))
    await asyncio.sleep(0)  # let stop() close the listening socket (not a synchronisation)
    with pytest.raises(ConnectionRefusedError):
        await call(server.port)
    assert not stopping.done()
    gate.set()
    await stopping
    assert (await in_flight).variables == ROUTE


async def test_stop_cancels_sessions_after_grace(serve: Serve) -> None:
    loop = asyncio.get_running_loop()
    started, outcome = loop.create_future(), loop.create_future()
    server = await serve({"route": hang(started, outcome)}, deadline_s=30.0)
    in_flight = asyncio.create_task(call(server.port))
    await started
    await server.stop(grace_s=0.05)
    assert await outcome == "cancelled"
    result = await in_flight
    assert result.commands == [] and result.closed_by_agent
    assert server.active == 0


# ------------------------------------------------------------------------------ sync fast path


def answer_now(variables: Mapping[str, str], tasks: list[asyncio.Task[Any] | None]) -> Script:
    """A script that answers without awaiting; `tasks` records the task it ran in."""

    def script(request: AgiRequest) -> Mapping[str, str]:
        tasks.append(asyncio.current_task())
        return variables

    return script


async def test_sync_script_answers_without_a_task(serve: Serve) -> None:
    tasks: list[asyncio.Task[Any] | None] = []
    server = await serve({"route": answer_now(ROUTE, tasks)})
    result = await call(server.port)
    assert tasks == [None]  # run from the transport's callback, not from a task
    assert len(result.commands) == 1 and result.variables == ROUTE
    assert result.closed_by_agent
    assert server.outcomes["ok"] == 1 and not server.errors


async def test_sync_script_may_return_any_mapping_or_awaitable(serve: Serve) -> None:
    loop = asyncio.get_running_loop()

    def proxy(request: AgiRequest) -> Mapping[str, str]:
        return MappingProxyType(ROUTE)

    def future(request: AgiRequest) -> Awaitable[Mapping[str, str]]:
        answered: asyncio.Future[Mapping[str, str]] = loop.create_future()
        loop.call_soon(answered.set_result, {"CRM_KNOWN": "0"})
        return answered

    server = await serve({"route": proxy, "lookup": future})
    assert (await call(server.port)).variables == ROUTE
    assert (await call(server.port, retarget(load_env(), "lookup"))).variables == {
        "CRM_KNOWN": "0"}
    assert server.outcomes["ok"] == 2 and not server.errors


async def test_sync_or_async_per_call(serve: Serve) -> None:
    cached: dict[str, Mapping[str, str]] = {}

    def route(request: AgiRequest) -> Mapping[str, str] | Awaitable[Mapping[str, str]]:
        if request.callerid in cached:
            return cached[request.callerid]

        async def look_up() -> Mapping[str, str]:
            await asyncio.sleep(0)
            cached[request.callerid] = ROUTE
            return ROUTE

        return look_up()

    server = await serve({"route": route})
    results = [await call(server.port) for _ in range(3)]
    assert all(result.variables == ROUTE for result in results)
    assert server.outcomes["ok"] == 3


async def test_raising_sync_script_falls_back(serve: Serve, caplog: pytest.LogCaptureFixture
                                             ) -> None:
    def broken(request: AgiRequest) -> Mapping[str, str]:
        raise LookupError("CRM said +33612345678 is weird")

    server = await serve({"route": broken})
    with caplog.at_level(logging.WARNING, logger="agent.agi"):
        result = await call(server.port)
    assert result.variables == {**DEFAULT, "CRM_ERROR": "internal-error"}
    assert server.errors["internal-error"] == 1 and server.outcomes["fallback"] == 1
    assert "failed with LookupError" in caplog.text and "+33612345678" not in caplog.text


async def test_non_mapping_answer_is_an_internal_error(serve: Serve) -> None:
    server = await serve({"route": lambda request: None})
    result = await call(server.port)
    assert result.variables == {**DEFAULT, "CRM_ERROR": "internal-error"}


async def test_hangup_glued_to_the_env_with_sync_script(serve: Serve) -> None:
    tasks: list[asyncio.Task[Any] | None] = []
    server = await serve({"route": answer_now(ROUTE, tasks)})
    result = await call(server.port, load_env() + b"HANGUP\n", replies=[DEAD])
    assert result.closed_by_agent
    assert server.outcomes["hangup"] == 1 and not server.errors


async def test_values_too_long_for_one_command_take_one_round_trip_each(serve: Serve) -> None:
    variables = {f"CRM_V{i}": chr(65 + i) * 250 for i in range(12)}
    server = await serve({"route": answer_now(variables, [])})
    result = await call(server.port)
    assert len(result.commands) == 2
    assert result.variables == variables
    assert server.outcomes["ok"] == 1


async def test_second_command_refused(serve: Serve) -> None:
    variables = {f"CRM_V{i}": chr(65 + i) * 250 for i in range(12)}
    server = await serve({"route": answer_now(variables, [])})
    result = await call(server.port, replies=[OK, b"510 Invalid or unknown command\n"])
    assert len(result.commands) == 2 and result.closed_by_agent
    assert server.errors["command-refused"] == 1 and server.outcomes["failed"] == 1


# ------------------------------------------------------------------------------ timer, replies


async def silent_asterisk(port: int, env: bytes) -> tuple[bytes, float]:
    """Send the env, never reply; return what the agent sent and when it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()
    try:
        writer.write(env)
        received = await reader.read()  # until the agent closes
        return received, time.perf_counter() - started
    finally:
        writer.close()
        await writer.wait_closed()


async def test_no_reply_within_the_deadline(serve: Serve, caplog: pytest.LogCaptureFixture
                                            ) -> None:
    server = await serve({"route": answer_now(ROUTE, [])}, deadline_s=0.2)
    with caplog.at_level(logging.WARNING, logger="agent.agi"):
        received, closed_s = await silent_asterisk(server.port, load_env())
    assert received.startswith(b'EXEC MSet "')
    assert 0.2 - MARGIN_S / 2 < closed_s < 0.2 + MARGIN_S
    assert server.errors["reply-timeout"] == 1 and server.outcomes["failed"] == 1
    assert "no reply within the deadline (uniqueid 1796088099.1)" in caplog.text


async def test_header_may_take_longer_than_the_deadline(serve: Serve) -> None:
    """The header timeout is its own: a session's single timer, first armed for the script
    budget, is pushed back to it while the env block is still coming."""
    server = await serve({"route": answer_now(ROUTE, [])}, deadline_s=0.05,
                         header_timeout_s=0.2)
    _, closed_s = await silent_asterisk(server.port, b"agi_network: yes\n")
    assert 0.2 - MARGIN_S / 2 < closed_s < 0.2 + MARGIN_S
    assert server.errors["header-timeout"] == 1


async def test_short_header_timeout_does_not_cut_the_script_budget(serve: Serve) -> None:
    loop = asyncio.get_running_loop()
    started = loop.create_future()
    server = await serve({"route": hang(started)}, deadline_s=0.3, header_timeout_s=0.05)
    result = await call(server.port)
    assert 0.3 * 0.8 - MARGIN_S / 2 < result.answer_s < 0.3 + MARGIN_S
    assert result.variables == {**DEFAULT, "CRM_ERROR": "timeout"}


async def test_env_block_in_pieces(serve: Serve) -> None:
    server = await serve({"route": answer(ROUTE)})
    env = load_env()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for start in range(0, len(env), 7):
            writer.write(env[start : start + 7])
            await writer.drain()
        command = await reader.readuntil(b"\n")
        writer.write(OK)
        assert await reader.read() == b""
    finally:
        writer.close()
        await writer.wait_closed()
    assert channel_variables(command) == ROUTE
    assert server.outcomes["ok"] == 1


async def test_garbage_reply(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    server = await serve({"route": answer(ROUTE)})
    with caplog.at_level(logging.WARNING, logger="agent.agi"):
        result = await call(server.port, replies=[b"HTTP/1.1 400 Bad Request\n"])
    assert result.closed_by_agent
    assert server.errors["bad-reply"] == 1
    assert "bad reply (uniqueid 1796088099.1): not an AGI reply" in caplog.text


async def test_over_long_reply_line(serve: Serve) -> None:
    server = await serve({"route": answer(ROUTE)}, max_line=1024)
    result = await call(server.port, replies=[b"200 result=0 (" + b"x" * 2000 + b")\n"])
    assert result.closed_by_agent
    assert server.errors["bad-reply"] == 1


async def test_channel_variables_helper_ignores_other_commands() -> None:
    assert channel_variables(b'SET VARIABLE CRM_A "1"\n') == {}
