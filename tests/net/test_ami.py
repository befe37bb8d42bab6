"""AmiListener + the real panoramisk Manager against a fake AMI server on loopback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from panoramisk.message import Message  # type: ignore[import-untyped]

from agent.core.model import CallRecord
from agent.core.queues import QueueBoard
from agent.journal.ami import AmiListener, AmiLoginError, headers
from agent.journal.calltrack import CallTracker
from tests.amitrace import Trace, channels_up, parse, traces
from tests.net.fake_ami import FakeAmi

TRACES = traces()
WAIT_S = 5.0
OnCall = Callable[[CallRecord], Awaitable[None]]
Factory = Callable[..., Awaitable[tuple[AmiListener, "asyncio.Queue[CallRecord]"]]]


def trace(prefix: str) -> Trace:
    return next(t for t in TRACES if t.name.startswith(prefix))


def as_json(records: list[CallRecord]) -> dict[str, dict[str, Any]]:
    return {r.call_id: r.model_dump(mode="json") for r in records}


async def take(queue: asyncio.Queue[Any], count: int) -> list[Any]:
    async with asyncio.timeout(WAIT_S):
        return [await queue.get() for _ in range(count)]


@pytest.fixture
async def ami() -> AsyncIterator[FakeAmi]:
    async with FakeAmi() as server:
        yield server


@pytest.fixture
async def listen(ami: FakeAmi) -> AsyncIterator[Factory]:
    """Factory: a started AmiListener on the fake server and the queue its calls land in."""
    made: list[AmiListener] = []

    async def make(on_call: OnCall | None = None, **options: Any,
                   ) -> tuple[AmiListener, asyncio.Queue[CallRecord]]:
        records: asyncio.Queue[CallRecord] = asyncio.Queue()

        async def collect(record: CallRecord) -> None:
            records.put_nowait(record)

        tracker = options.pop("tracker", None) or CallTracker(grace_s=0.2)
        settings: dict[str, Any] = {
            "host": "127.0.0.1", "port": ami.port, "username": "agent", "secret": "s3cret",
            "reconnect_min_s": 0.01, "reconnect_max_s": 0.05, "emit_interval_s": 0.01,
            "timeout_s": 1.0, **options}
        listener = AmiListener(tracker, on_call or collect, **settings)
        made.append(listener)
        await listener.start()
        return listener, records

    yield make
    for listener in made:
        await listener.stop()


@pytest.mark.parametrize("recorded", TRACES, ids=lambda t: t.name)
async def test_each_trace_yields_exactly_its_calls(ami: FakeAmi, listen: Factory,
                                                   recorded: Trace) -> None:
    listener, records = await listen()
    session = await take(ami.sessions, 1)
    await session[0].push(recorded.raw, chunk=1500)

    got = await take(records, len(recorded.expected))
    await listener.stop()

    assert as_json(got) == as_json(recorded.expected)
    assert records.empty()


async def test_reconnects_and_logs_in_again_after_a_dropped_connection(
        ami: FakeAmi, listen: Factory) -> None:
    listener, records = await listen()
    [first] = await take(ami.sessions, 1)
    cut = trace("10").raw
    half = cut[: len(cut) // 2 + 7]  # both calls under way, a message cut in two
    ami.channels = channels_up(parse(half[: half.rindex(b"\r\n\r\n")]))  # still up
    await first.push(half)
    await first.drop()

    [second] = await take(ami.sessions, 1)
    await second.push(trace("01").raw)
    [record] = await take(records, 1)
    await listener.stop()
    flushed = [records.get_nowait() for _ in range(records.qsize())]

    assert await take(ami.logins, 2) == [("agent", True), ("agent", True)]
    assert as_json([record]) == as_json(trace("01").expected)
    assert {r.call_id for r in flushed} == {c.call_id for c in trace("10").expected}


async def test_a_refused_login_is_reported_and_retried(
        ami: FakeAmi, listen: Factory, caplog: pytest.LogCaptureFixture) -> None:
    ami.secret = "changed-on-the-pbx"
    listener, _ = await listen()

    with pytest.raises(AmiLoginError, match=r"login as 'agent' .* refused: Authentication failed"):
        await listener.wait_ready()

    assert await take(ami.logins, 2) == [("agent", False), ("agent", False)]
    assert listener.last_error is not None and "refused" in listener.last_error
    assert not listener.ready
    assert any(r.levelno == logging.ERROR and "refused" in r.getMessage()
               for r in caplog.records)


async def test_a_server_down_at_start_up_is_retried_until_it_comes_up(listen: Factory) -> None:
    async with FakeAmi() as gone:
        port = gone.port
    listener, _ = await listen(port=port)  # connection refused, retried with backoff

    async with FakeAmi(port=port) as server:
        await take(server.sessions, 1)
        await listener.wait_ready()

        assert listener.ready and listener.last_error is None


async def test_a_server_that_stops_answering_ping_is_dropped(
        ami: FakeAmi, listen: Factory, caplog: pytest.LogCaptureFixture) -> None:
    ami.answer_pings = False
    await listen(ping_interval_s=0.02, timeout_s=0.1)
    await take(ami.sessions, 1)
    await take(ami.pings, 1)

    ami.answer_pings = True
    await take(ami.sessions, 1)  # logged in again on a new connection

    assert any("no answer to Ping" in r.getMessage() for r in caplog.records)


async def test_pings_keep_a_healthy_session(ami: FakeAmi, listen: Factory) -> None:
    listener, _ = await listen(ping_interval_s=0.01)
    await take(ami.sessions, 1)
    await take(ami.pings, 3)

    assert listener.ready and ami.sessions.empty()


@pytest.mark.parametrize("error", [RuntimeError("CRM down"), asyncio.CancelledError()],
                         ids=["exception", "stray-cancellation"])
async def test_a_failing_callback_does_not_stop_the_journal(
        ami: FakeAmi, listen: Factory, caplog: pytest.LogCaptureFixture,
        error: BaseException) -> None:
    delivered: asyncio.Queue[CallRecord] = asyncio.Queue()
    calls = 0

    async def flaky(record: CallRecord) -> None:
        nonlocal calls
        calls += 1
        delivered.put_nowait(record)
        if calls == 1:
            raise error

    await listen(on_call=flaky)
    [session] = await take(ami.sessions, 1)
    await session.push(trace("10").raw)
    await session.push(trace("11").raw)

    got = await take(delivered, 3)

    assert {r.call_id for r in got} == {c.call_id for t in ("10", "11")
                                        for c in trace(t).expected}
    failures = [r for r in caplog.records if "journal callback" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelno == logging.ERROR


async def test_a_record_interrupted_by_stop_is_handed_over_again(
        ami: FakeAmi, listen: Factory) -> None:
    attempts: list[str] = []
    hanging = asyncio.Event()

    async def hangs_first(record: CallRecord) -> None:
        attempts.append(record.call_id)
        if len(attempts) == 1:
            hanging.set()
            await asyncio.Event().wait()  # a CRM that never answers, until the stop

    listener, _ = await listen(on_call=hangs_first)
    [session] = await take(ami.sessions, 1)
    await session.push(trace("01").raw)
    async with asyncio.timeout(WAIT_S):
        await hanging.wait()

    await listener.stop()

    assert attempts == ["1796088499.2", "1796088499.2"]


async def test_stop_flushes_calls_still_open(ami: FakeAmi, listen: Factory) -> None:
    listener, records = await listen()
    [session] = await take(ami.sessions, 1)
    raw = trace("09").raw
    await session.push(raw[: raw.index(b"Event: BlindTransfer")])
    await listener.wait_ready()

    await listener.stop()
    await listener.stop()

    [record] = [records.get_nowait() for _ in range(records.qsize())]
    assert record.call_id == "1796088604.38" and record.answered_by == "201"


QUEUE_STATUS = (
    {"Event": "QueueParams", "Queue": "support", "Calls": "0"},
    {"Event": "QueueMember", "Queue": "support", "Name": "Alice",
     "Location": "Local/201@employees", "Status": "1", "Paused": "0"},
    {"Event": "QueueMember", "Queue": "support", "Name": "Bob",
     "Location": "Local/202@employees", "Status": "1", "Paused": "0"},
    {"Event": "QueueParams", "Queue": "sales", "Calls": "3"},
    {"Event": "QueueMember", "Queue": "sales", "Name": "Bob",
     "Location": "Local/202@employees", "Status": "2", "Paused": "0"},
)


async def test_queue_state_from_queue_status_then_events(listen: Factory) -> None:
    async with FakeAmi(queue_status=QUEUE_STATUS) as server:
        listener, records = await listen(port=server.port)
        await listener.wait_ready()
        seeded = listener.queue_state()
        [session] = await take(server.sessions, 1)
        await session.push(trace("04").raw)  # pauses Alice in support; Bob rings, then idles
        await take(records, 1)

        assert seeded == {"support": {"available": 2, "waiting": 0},
                          "sales": {"available": 0, "waiting": 3}}
        assert listener.queue_state() == {"support": {"available": 1, "waiting": 0},
                                          "sales": {"available": 1, "waiting": 3}}


def test_queue_board_counts_waiting_callers_and_removed_members() -> None:
    board = QueueBoard()
    for event in (
        {"Event": "QueueMemberAdded", "Queue": "q", "Interface": "PJSIP/201", "Status": "1",
         "Paused": "0"},
        {"Event": "QueueMemberAdded", "Queue": "q", "Interface": "PJSIP/202", "Status": "5",
         "Paused": "0"},
        {"Event": "QueueCallerJoin", "Queue": "q", "Count": "2"},
    ):
        board.feed(event)
    assert board.snapshot() == {"q": {"available": 1, "waiting": 2}}

    board.feed({"Event": "QueueMemberRemoved", "Queue": "q", "Interface": "PJSIP/201"})
    board.feed({"Event": "QueueCallerLeave", "Queue": "q", "Count": "1"})
    assert board.snapshot() == {"q": {"available": 0, "waiting": 1}}


def test_headers_flatten_panoramisk_messages() -> None:
    message = Message.from_line("Event: VarSet\r\nChanVariable: a=1\r\nChanVariable: b=2\r\n"
                                "Linkedid: 1.2")
    assert headers(message) == {"Event": "VarSet", "ChanVariable": "b=2", "Linkedid": "1.2"}


# -- Asterisk crashes, restarts, or the connection is lost with calls open -----------------

def cut_before_hangup(prefix: str) -> tuple[bytes, bytes]:
    """A recorded call cut where Asterisk died: answered, talking, no Hangup yet."""
    raw = trace(prefix).raw
    at = raw.index(b"Event: Hangup")
    return raw[:at], raw[at:]


async def asked(ami: FakeAmi, action: str) -> None:
    async with asyncio.timeout(WAIT_S):
        while await ami.actions.get() != action:
            pass


async def test_a_call_open_when_asterisk_crashed_ends_when_the_connection_was_lost(
        ami: FakeAmi, listen: Factory) -> None:
    tracker = CallTracker(grace_s=0.2)  # max_idle_s: 4 h, as configured by default
    listener, records = await listen(tracker=tracker)
    [first] = await take(ami.sessions, 1)
    talking, _ = cut_before_hangup("02")
    await first.push(talking)
    lost_after = datetime.now(UTC)
    await first.drop()  # Asterisk crashed; it comes back with no channel at all

    await take(ami.sessions, 1)
    await asked(ami, "CoreShowChannels")
    await listener.wait_ready()
    assert tracker.open_calls == 0
    [record] = await take(records, 1)

    expected = trace("02").expected[0]
    assert record.call_id == expected.call_id and record.answered_by == "201"
    assert record.answered_at == expected.answered_at
    assert record.ended_at is not None
    assert lost_after <= record.ended_at <= datetime.now(UTC)  # not its start, not hours later


async def test_a_call_still_up_after_a_reconnect_ends_with_its_hangup(
        ami: FakeAmi, listen: Factory) -> None:
    tracker = CallTracker(grace_s=0.2)
    listener, records = await listen(tracker=tracker)
    [first] = await take(ami.sessions, 1)
    talking, rest = cut_before_hangup("02")
    ami.channels = channels_up(parse(talking))  # a network blip: Asterisk kept the call
    await first.push(talking)
    await first.drop()

    [second] = await take(ami.sessions, 1)
    await asked(ami, "CoreShowChannels")
    await listener.wait_ready()
    assert tracker.open_calls == 1
    await second.push(rest)

    assert as_json(await take(records, 1)) == as_json(trace("02").expected)


async def reconnect_mid_call(ami: FakeAmi, listen: Factory, refused: set[str]
                             ) -> tuple[CallTracker, asyncio.Queue[CallRecord]]:
    """Trace 01 cut before its hang-up, the connection dropped, and a new session that
    refuses the `refused` actions (manager.conf rights), once the listener is ready again."""
    tracker = CallTracker(grace_s=0.2)
    ami.refused = refused  # e.g. manager.conf `write = call` only
    listener, records = await listen(tracker=tracker)
    [first] = await take(ami.sessions, 1)
    talking, _ = cut_before_hangup("01")
    await first.push(talking)
    await first.drop()
    await take(ami.sessions, 1)
    await asked(ami, "Status")
    await listener.wait_ready()
    return tracker, records


async def test_status_lists_the_channels_when_core_show_channels_is_refused(
        ami: FakeAmi, listen: Factory) -> None:
    tracker, records = await reconnect_mid_call(ami, listen, {"CoreShowChannels"})
    assert tracker.open_calls == 0
    [record] = await take(records, 1)
    assert record.call_id == trace("01").expected[0].call_id


async def test_without_any_channel_list_the_calls_wait_for_max_idle(
        ami: FakeAmi, listen: Factory, caplog: pytest.LogCaptureFixture) -> None:
    tracker, _ = await reconnect_mid_call(ami, listen, {"CoreShowChannels", "Status"})
    assert tracker.open_calls == 1
    [warning] = [r.getMessage() for r in caplog.records if "cannot list" in r.getMessage()]
    assert "CoreShowChannels: Permission denied; Status: Permission denied" in warning
    assert "ami.max_idle_s" in warning and "write = reporting" in warning


async def test_the_reconnect_log_states_the_delay_it_waits(
        ami: FakeAmi, listen: Factory, caplog: pytest.LogCaptureFixture) -> None:
    ami.secret = "not-yet"
    listener, _ = await listen(reconnect_min_s=0.01, reconnect_max_s=0.04)
    await take(ami.logins, 3)  # refused three times: the backoff grew to 0.04 s
    ami.secret = "s3cret"
    [session] = await take(ami.sessions, 1)
    await listener.wait_ready()
    await session.drop()  # this session worked: the backoff starts over

    await take(ami.sessions, 1)

    drops = [r.getMessage() for r in caplog.records if "closed by the server" in r.getMessage()]
    assert drops == [f"AMI 127.0.0.1:{ami.port}: connection closed by the server; "
                     "reconnecting in 0.01 s"]


async def test_panoramisk_logs_nothing(ami: FakeAmi, listen: Factory,
                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    listener, _ = await listen()
    [session] = await take(ami.sessions, 1)
    await session.drop()
    await take(ami.sessions, 1)
    await listener.wait_ready()

    assert [r.getMessage() for r in caplog.records if r.name.startswith("panoramisk")] == []
