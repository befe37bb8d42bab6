"""CallTracker against the recorded Asterisk 22 traces (tests/fixtures/ami/README.md)."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

import pytest

from agent.core.model import CallRecord
from agent.journal.callstate import endpoint
from agent.journal.calltrack import CallTracker, event_time
from tests.amitrace import TIME_FIELDS, Trace, channels_up, parse, strip_timestamps, traces

TRACES = traces()
GRACE_S = 2.0
SHIFT_US = 1_000_123_457  # receive clock = event clock + SHIFT_US: recognisable times


def micros(stamp: str) -> int:
    seconds, _, fraction = stamp.partition(".")
    return int(seconds) * 1_000_000 + int(fraction.ljust(6, "0"))


def receive_times(events: list[dict[str, str]], start_us: int) -> list[float]:
    """A monotonic receive clock that follows the recorded Timestamps from `start_us` on.

    Kept in integer microseconds so receive times convert back to the exact microsecond.
    """
    origin = next((micros(e["Timestamp"]) for e in events if "Timestamp" in e), 0)
    clock, times = start_us, []
    for event in events:
        if "Timestamp" in event:
            clock = max(clock, start_us + micros(event["Timestamp"]) - origin)
        times.append(clock / 1e6)
    return times


def replay(tracker: CallTracker, events: list[dict[str, str]], times: list[float],
           ) -> list[CallRecord]:
    """Feed like the AMI adapter does: `due()` after every event, then once after the grace."""
    records = []
    for event, at in zip(events, times, strict=True):
        tracker.feed(event, at)
        records += tracker.due(at)
    records += tracker.due(times[-1] + GRACE_S + 0.001)
    return records


def by_id(records: Iterable[CallRecord]) -> dict[str, dict[str, object]]:
    """Records as JSON-ready dicts (readable diffs, time zones compared by value)."""
    return {r.call_id: r.model_dump(mode="json") for r in records}


def shifted(record: CallRecord, shift_us: int) -> CallRecord:
    shift = timedelta(microseconds=shift_us)
    update: dict[str, object] = {
        name: value + shift for name in TIME_FIELDS if (value := getattr(record, name)) is not None}
    update["transfers"] = [t.model_copy(update={"at": t.at + shift})
                           for t in record.transfers if t.at is not None]
    return record.model_copy(update=update)


def assert_records(got: list[CallRecord], expected: list[CallRecord]) -> None:
    got_by_id, expected_by_id = by_id(got), by_id(expected)
    assert len(got) == len(got_by_id), "a call was emitted twice"
    assert sorted(got_by_id) == sorted(expected_by_id)
    for call_id, record in got_by_id.items():
        assert record == expected_by_id[call_id]


def first_stamp(events: list[dict[str, str]]) -> int:
    return next(micros(e["Timestamp"]) for e in events if "Timestamp" in e)


@pytest.mark.parametrize("trace", TRACES, ids=lambda t: t.name)
def test_trace_gives_expected_calls(trace: Trace) -> None:
    events = trace.events
    records = replay(CallTracker(grace_s=GRACE_S), events,
                     receive_times(events, first_stamp(events) + SHIFT_US))

    assert_records(records, trace.expected)


@pytest.mark.parametrize("trace", TRACES, ids=lambda t: t.name)
def test_without_timestamps_times_are_receive_times(trace: Trace) -> None:
    timed = trace.events
    times = receive_times(timed, first_stamp(timed) + SHIFT_US)
    events = parse(strip_timestamps(trace.raw))
    assert not any("Timestamp" in e for e in events)

    records = replay(CallTracker(grace_s=GRACE_S), events, times)

    assert_records(records, [shifted(r, SHIFT_US) for r in trace.expected])


@pytest.mark.parametrize("stamped", [True, False], ids=["timestamps", "receive-times"])
def test_concatenated_stream(stamped: bool) -> None:
    """All traces as one AMI session, 10 s apart: 16 calls, each emitted once."""
    events: list[dict[str, str]] = []
    times: list[float] = []
    expected: list[CallRecord] = []
    for trace in TRACES:
        timed = trace.events
        start_us = round((times[-1] if times else 1_000.0) * 1e6) + 10_000_000
        times += receive_times(timed, start_us)
        events += timed if stamped else parse(strip_timestamps(trace.raw))
        shift = 0 if stamped else start_us - first_stamp(timed)
        expected += [shifted(r, shift) for r in trace.expected]

    records = replay(CallTracker(grace_s=GRACE_S), events, times)

    assert len(expected) == 16
    assert_records(records, expected)


def interleave(events: list[dict[str, str]], seed: int) -> list[dict[str, str]]:
    """Another run's order: each channel's events keep their order, channels interleave."""
    groups: dict[str, list[dict[str, str]]] = {}
    for n, event in enumerate(events):
        key = (event.get("Uniqueid") or event.get("UniqueID")
               or (event.get("DestUniqueid") if "Channel" not in event else None) or str(n))
        groups.setdefault(key, []).append(event)
    rng, queues, merged = random.Random(seed), list(groups.values()), []
    while queues:
        queue = rng.choice(queues)
        merged.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    return merged


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("trace", TRACES, ids=lambda t: t.name)
def test_channel_interleaving_does_not_matter(trace: Trace, seed: int) -> None:
    tracker = CallTracker(grace_s=GRACE_S)
    for event in interleave(trace.events, seed):
        tracker.feed(event, 1.0)

    assert_records(tracker.due(1.0 + GRACE_S), trace.expected)


@pytest.mark.parametrize("seed", range(3))
def test_all_calls_interleaved_in_one_stream(seed: int) -> None:
    tracker = CallTracker(grace_s=GRACE_S)
    for event in interleave([e for t in TRACES for e in t.events], seed):
        tracker.feed(event, 1.0)

    assert_records(tracker.due(1.0 + GRACE_S), [c for t in TRACES for c in t.expected])


def _trace(prefix: str) -> Trace:
    return next(t for t in TRACES if t.name.startswith(prefix))


@pytest.mark.parametrize("trace", TRACES, ids=lambda t: t.name)
def test_cdrs_anywhere_change_nothing(trace: Trace) -> None:
    """`Cdr`s float: before the deciding DialEnd (08) or after the last Hangup (15 of 39)."""
    events = trace.events
    cdrs = [e for e in events if e.get("Event") == "Cdr"]
    others = [e for e in events if e.get("Event") != "Cdr"]
    first_channel = next(i for i, e in enumerate(others) if e.get("Event") == "Newchannel")
    early = others[: first_channel + 2] + cdrs + others[first_channel + 2:]
    for order in (others + cdrs, early):
        records = replay(CallTracker(grace_s=GRACE_S), order, [1.0 + i for i in range(len(order))])
        assert by_id(records) == by_id(trace.expected)


def test_late_cdr_after_finalization_creates_nothing() -> None:
    events = _trace("01").events
    cdrs = [e for e in events if e.get("Event") == "Cdr"]
    tracker = CallTracker(grace_s=GRACE_S)
    for event in events:
        if event.get("Event") != "Cdr":
            tracker.feed(event, 10.0)

    assert tracker.due(10.0 + GRACE_S / 2) == []
    [record] = tracker.due(10.0 + GRACE_S)
    for cdr in cdrs:
        tracker.feed(cdr, 20.0)

    assert record == _trace("01").expected[0]
    assert tracker.open_calls == 0
    assert tracker.due(100.0) == [] and tracker.flush() == []


def test_late_event_within_grace_restarts_the_wait() -> None:
    events = _trace("09").events
    last_hangup = max(i for i, e in enumerate(events) if e.get("Event") == "Hangup")
    tracker = CallTracker(grace_s=GRACE_S)
    for event in events[: last_hangup + 1]:
        tracker.feed(event, 10.0)
    tracker.feed({"Event": "Cdr", "UniqueID": "1796088604.39"}, 11.5)

    assert tracker.due(12.5) == []
    assert [r.call_id for r in tracker.due(13.5)] == ["1796088604.38"]


def test_a_call_with_a_channel_up_is_not_due() -> None:
    events = _trace("09").events
    first_hangup = min(i for i, e in enumerate(events) if e.get("Event") == "Hangup")
    tracker = CallTracker(grace_s=GRACE_S)
    for event in events[: first_hangup + 1]:
        tracker.feed(event, 10.0)

    assert tracker.due(1_000.0) == []
    [record] = tracker.flush()
    assert record.answered_by == "201" and record.ended_at is not None


@pytest.mark.parametrize("trace", TRACES, ids=lambda t: t.name)
def test_replayed_events_create_no_duplicates(trace: Trace) -> None:
    doubled = [e for e in trace.events for _ in range(2)]
    records = replay(CallTracker(grace_s=GRACE_S), doubled,
                     [1.0 + i / 10 for i in range(len(doubled))])

    assert_records(records, trace.expected)


def _call(n: int) -> list[dict[str, str]]:
    linkedid, trunk = f"1700000000.{2 * n}", f"PJSIP/ovh-{n:08x}"
    channel = {"Channel": trunk, "Uniqueid": linkedid, "Linkedid": linkedid,
               "CallerIDNum": "0612345678", "Exten": "0140000000"}
    return [{"Event": "Newchannel", **channel}, {"Event": "Hangup", **channel}]


def test_memory_stays_bounded() -> None:
    tracker = CallTracker(grace_s=GRACE_S, max_calls=10, retain_s=60.0)
    emitted: list[CallRecord] = []
    for n in range(1_000):
        tracker.feed(_call(n)[0], float(n))  # channels that never hang up
        assert tracker.open_calls <= 10
        emitted += tracker.due(float(n))

    emitted += tracker.flush()
    assert len(by_id(emitted)) == 1_000
    assert tracker.known_channels <= 20
    tracker.due(10_000.0)
    assert tracker.known_channels == 0 and tracker.open_calls == 0


def test_a_call_whose_hangup_was_lost_ends_after_max_idle_at_its_last_event() -> None:
    tracker = CallTracker(grace_s=GRACE_S, max_idle_s=600.0)
    newchannel = _call(1)[0]
    tracker.feed(newchannel, 0.0)
    tracker.feed({**newchannel, "Event": "Newstate", "ChannelState": "6"}, 42.0)

    assert tracker.due(641.0) == []
    [record] = tracker.due(642.0)
    assert record.caller == "+33612345678" and record.did == "+33140000000"
    assert not record.answered
    assert record.started_at == at(0.0) and record.ended_at == at(42.0)


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _talking(prefix: str) -> tuple[CallTracker, list[dict[str, str]]]:
    """A tracker fed one recorded call up to its first Hangup (received at 10 s)."""
    events = _trace(prefix).events
    talking = events[: next(i for i, e in enumerate(events) if e.get("Event") == "Hangup")]
    tracker = CallTracker(grace_s=GRACE_S)
    for event in talking:
        tracker.feed(event, 10.0)
    return tracker, talking


def test_reconcile_closes_a_call_whose_channels_are_gone_at_the_connection_loss() -> None:
    tracker, _ = _talking("02")
    lost = _trace("02").expected[0].ended_at.timestamp() + 60  # type: ignore[union-attr]
    tracker.lost(lost)

    assert tracker.reconcile([], listed_at=20.0) == 1
    [record] = tracker.due(20.0)
    expected = _trace("02").expected[0]
    assert record.answered_by == "201" and record.answered_at == expected.answered_at
    assert record.ended_at == at(lost)


def test_reconcile_ends_a_call_at_its_last_event_when_that_is_later() -> None:
    tracker, talking = _talking("02")
    tracker.lost(5.0)  # an agent clock behind the PBX's

    tracker.reconcile([], listed_at=20.0)
    [record] = tracker.due(20.0)
    assert record.ended_at == event_time(talking[-1], 10.0)


@pytest.mark.parametrize("listed", [
    [{"Uniqueid": "1796088768.118", "Linkedid": "1796088768.116"}],  # Alice's leg only
    [{"Uniqueid": "1796088999.1", "Linkedid": "1796088768.116"}],  # a channel never seen
], ids=["known-channel", "new-channel-of-the-call"])
def test_reconcile_keeps_a_call_asterisk_still_lists(listed: list[dict[str, str]]) -> None:
    tracker, _ = _talking("02")

    assert tracker.reconcile(listed, listed_at=20.0) == 0
    assert tracker.open_calls == 1 and tracker.due(1_000.0) == []
    tracker.feed({"Event": "Hangup", **listed[0]}, 1_000.0)
    [record] = tracker.due(1_000.0 + GRACE_S)
    assert record.ended_at == at(1_000.0)


def test_reconcile_leaves_a_call_heard_of_since_it_asked() -> None:
    tracker, _ = _talking("02")

    assert tracker.reconcile([], listed_at=10.0) == 0
    assert tracker.open_calls == 1


def test_reconcile_marks_the_channels_that_are_gone() -> None:
    tracker, talking = _talking("09")
    alice = [c for c in channels_up(talking) if c["Channel"].startswith("Local/201")]
    tracker.reconcile(alice, listed_at=20.0)
    for event in _trace("09").events:
        if event.get("Event") == "Hangup" and event.get("Channel", "").startswith("Local/201"):
            tracker.feed(event, 30.0)  # the last channel Asterisk still had hangs up

    [record] = tracker.due(30.0 + GRACE_S)
    assert record.answered_by == "201"


def test_call_tracking_variables_become_utm_tags() -> None:
    channel = _call(1)[0]
    tracker = CallTracker(grace_s=GRACE_S)
    for variable, value in (("__CRM_UTM_SOURCE", "google"), ("CRM_UTM_CAMPAIGN", "spring"),
                            ("CRM_UTM_CAMPAIGN", "spring-2"), ("CRM_UTM_GCLID", "abc"),
                            ("CRM_UTM_MEDIUM", "")):
        tracker.feed({**channel, "Event": "VarSet", "Variable": variable, "Value": value}, 1.0)
    tracker.feed({**channel, "Event": "Hangup"}, 2.0)

    [record] = tracker.due(2.0 + GRACE_S)
    assert record.utm == {"utm_source": "google", "utm_campaign": "spring-2",
                          "utm_gclid": "abc"}


def test_the_did_comes_from_the_dialplan_variable_when_exten_is_no_number() -> None:
    channel = {**_call(1)[0], "Exten": "s"}
    tracker = CallTracker(grace_s=GRACE_S)
    tracker.feed({**channel, "Event": "Newchannel"}, 1.0)
    tracker.feed({**channel, "Event": "VarSet", "Variable": "__CRM_DID",
                  "Value": "0140000010"}, 1.0)
    tracker.feed({**channel, "Event": "Hangup"}, 2.0)

    [record] = tracker.due(2.0 + GRACE_S)
    assert record.did == "+33140000010"


def test_finished_calls_are_forgotten_after_retain_s() -> None:
    tracker = CallTracker(grace_s=GRACE_S, retain_s=60.0)
    for event in _call(1):
        tracker.feed(event, 0.0)
    assert len(tracker.due(GRACE_S)) == 1
    tracker.feed({"Event": "Cdr", "UniqueID": "1700000000.2"}, 30.0)
    assert tracker.open_calls == 0 and tracker.known_channels == 1

    tracker.due(GRACE_S + 59.0)
    assert tracker.known_channels == 1
    tracker.due(GRACE_S + 60.0)
    assert tracker.known_channels == 0


@pytest.mark.parametrize("event", [
    {},
    {"Event": ""},
    {"Response": "Success", "ActionID": "x"},
    {"Event": "Hangup"},
    {"Event": "Hangup", "Linkedid": "1.1"},
    {"Event": "Newchannel", "Linkedid": "9" * 500, "Uniqueid": "1"},
    {"Event": "DialEnd", "Linkedid": "1.1", "Channel": "???", "DestChannel": "/",
     "DialStatus": "ANSWER"},
    {"Event": "VarSet", "Linkedid": "1.1", "Variable": ["a", "b"], "Value": None},
    {"Event": "Newchannel", "Linkedid": "1.1", "Uniqueid": "1.1", "Timestamp": "99e999"},
    {"Event": "Newchannel", "Linkedid": "1.1", "Uniqueid": "1.1", "Timestamp": "9" * 40},
    {"Event": "BlindTransfer", "TransfereeLinkedid": "1.1", "Result": "Success"},
    {"Event": "AttendedTransfer", "OrigTransfererLinkedid": "1.1"},
    {"Event": "Cdr", "UniqueID": "nope"},
])
def test_garbage_never_raises(event: Mapping[str, str]) -> None:
    tracker = CallTracker()
    tracker.feed(event, 5.0)
    tracker.due(1e6)
    for record in tracker.flush():
        assert record.call_id == "1.1"


@pytest.mark.parametrize(("channel", "device"), [
    ("PJSIP/201-00000012", "201"),
    ("SIP/201-0000a1b2", "201"),
    ("Local/201@employees-0000001f;1", "201"),
    ("Local/0612345678@pstn-sim-00000010;2", "0612345678"),
    ("PJSIP/ovh-trunk-0000000a", "ovh-trunk"),
    ("PJSIP/201", "201"),
    ("", ""),
])
def test_endpoint(channel: str, device: str) -> None:
    assert endpoint(channel) == device


def test_event_time_is_exact_to_the_microsecond() -> None:
    at = event_time({"Timestamp": "1796088499.813304"}, 0.0)
    assert at.isoformat() == "2026-12-01T01:28:19.813304+00:00"
    assert event_time({}, 1796088499.5).isoformat() == "2026-12-01T01:28:19.500000+00:00"


def test_outbound_direction_from_a_real_phone_channel() -> None:
    tracker = CallTracker(grace_s=0.0)
    phone = {"Channel": "PJSIP/201-00000001", "Uniqueid": "5.1", "Linkedid": "5.1",
             "CallerIDNum": "201", "Exten": "0612345678", "Context": "from-internal"}
    trunk = {"Channel": "PJSIP/ovh-00000002", "Uniqueid": "5.2", "Linkedid": "5.1"}
    dial = {**phone, "DestChannel": trunk["Channel"]}
    for event in ({"Event": "Newchannel", **phone}, {"Event": "Newchannel", **trunk},
                  {"Event": "DialBegin", **dial},
                  {"Event": "DialEnd", **dial, "DialStatus": "BUSY"},
                  {"Event": "Hangup", **trunk}, {"Event": "Hangup", **phone}):
        tracker.feed(event, 1.0)

    [record] = tracker.due(1.0)
    assert (record.direction, record.placed_by, record.caller, record.outcome) == (
        "outbound", "201", "+33612345678", "busy")
    assert record.rang == [] and record.did is None and not record.anonymous
