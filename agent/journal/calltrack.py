"""Asterisk AMI events -> one `CallRecord` per call (§7.1). Pure: no sockets, no asyncio.

`CallTracker.feed()` takes each AMI message as a str -> str mapping with its receive time;
`due(now)` hands back the calls that are over; `flush()` everything still open. The rules
below come from real Asterisk 22 traces (tests/fixtures/ami/README.md):

* **Call id = `Linkedid`**, the Uniqueid of the call's first channel; caller + DID is no key
  (the same caller can be on two calls at once). Events without `Linkedid`: `Cdr` carries only
  `UniqueID`, so a Uniqueid -> Linkedid map outlives `Hangup`; `BlindTransfer` /
  `AttendedTransfer` carry `Transferee*`/`Transferer*Linkedid`; the Originate's own `Dial*`
  events only `DestLinkedid`. Queue/device events belong to no call.
* **Direction** is decided from the first channel (Uniqueid == Linkedid): when its device
  (`PJSIP/201-…`, `SIP/201-…`, `Local/201@phones-…;1`) or its caller number is an internal
  extension (the `internal` pattern), an employee placed the call: outbound (click-to-call
  Originates put the handset first too). Otherwise it came from a trunk: inbound.
* **Caller / DID.** `Newchannel` says `CallerIDNum: <unknown>`; the number comes with a later
  event of the first channel. The DID is `Exten` of the first channel's `Newchannel` (after a
  `Goto` it becomes `support`, `201`…), else the dialplan's `DID` variable. For an outbound call
  the "caller" is the dialed number: `Exten` of the channel that dials the external party.
* **Answered** means an employee was connected: `DialEnd DialStatus=ANSWER` whose `DestChannel`
  is an employee (inbound) or external (outbound) channel; `AgentConnect` backs it up for
  queues. `Newstate Up`, `OriginateResponse Success` and `Cdr ANSWERED` do *not* mean answered
  (the PBX answers before `Queue`/`VoiceMail`; a click-to-call handset is off-hook), and a
  `Cdr NO ANSWER` does not mean missed. `Dial*` events without a source `Channel` are the
  Originate bringing up its first leg and are ignored.
* **Members that rang and were cancelled** (`DialEnd CANCEL`) are listed in `rang` only:
  one call answered by one member is one answered call.
* **Queue timeout vs abandon**: both emit `QueueCallerAbandon`; a timeout sets
  `QUEUESTATUS=TIMEOUT` (the caller had hung up first on a real abandon, so no status).
* **Recording**: `MixMonitorStart` has no file name; it is the `MIXMONITOR_FILENAME` VarSet
  (or the `MixMonitor` app argument). Reported for answered calls only.
* **Ending**: a call is over once every channel it has shown has hung up and nothing was
  heard for `grace_s` (`Cdr`s arrive after the last `Hangup` in a third of the calls); late
  events up to then update the same record. Events of a finished call are ignored for
  `retain_s`, after which its Uniqueids are forgotten. Event order across channels varies.
* **Time** is the event's `Timestamp` (only with `timestampevents = yes`), else the receive time.
* **Memory**: at most `max_calls` open calls (the least recently active one is finalized
  early); a call silent for `max_idle_s` with a channel still "up" (a lost `Hangup`) is
  finalized anyway.
* **Asterisk crashed or the connection was lost**: the `Hangup`s of the calls open then never
  come. `lost()` notes when the connection went; after the reconnect, `reconcile()` closes
  the calls whose channels Asterisk no longer lists (`CoreShowChannels`). A call closed
  without its `Hangup`s ends at the last moment it was known to be up: its last event, or
  the loss of the connection, whichever is later (never at its start).
* **Call tracking**: `CRM_UTM_SOURCE`, `CRM_UTM_CAMPAIGN`, ... channel variables (`VarSet`)
  become the record's `utm` tags (`utm_source`, `utm_campaign`, ...); the DID is also read
  from the `CRM_DID` variable the shipped dialplan sets.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from agent.core.model import CallRecord, Transfer
from agent.journal.callstate import NO_NUMBER, CallState, call_record, endpoint

log = logging.getLogger(__name__)

MAX_ID_LEN = 128
MAX_LIST = 100  # rang / transfers entries kept per call
MAX_UTM = 20  # utm tags kept per call (as many as `POST /events/call` takes)
UTM_PREFIX = "CRM_UTM_"


def event_time(event: Mapping[str, str], received_at: float) -> datetime:
    """`Timestamp: 1796088499.813304` to the exact microsecond, else the receive time."""
    raw = _get(event, "Timestamp")
    seconds, _, fraction = raw.partition(".")
    if seconds.isdigit() and (fraction.isdigit() or not fraction):
        micros = int(fraction[:6].ljust(6, "0")) if fraction else 0
        try:
            return datetime.fromtimestamp(int(seconds), UTC) + timedelta(microseconds=micros)
        except (OverflowError, OSError, ValueError):
            pass
    return datetime.fromtimestamp(received_at, UTC)


def _get(event: Mapping[str, str], key: str) -> str:
    value = event.get(key)
    return value if isinstance(value, str) else ""


class CallTracker:
    """Folds AMI events into call records, keyed by Linkedid (see the module docstring)."""

    def __init__(self, *, region: str = "FR", internal: re.Pattern[str] = re.compile(r"^\d{2,6}$"),
                 grace_s: float = 2.0, max_calls: int = 10000, max_idle_s: float = 4 * 3600.0,
                 retain_s: float = 300.0) -> None:
        self._region = region
        self._internal = internal
        self._grace_s = grace_s
        self._max_calls = max(1, max_calls)
        self._max_idle_s = max_idle_s
        self._retain_s = retain_s
        self._calls: OrderedDict[str, CallState] = OrderedDict()  # least recently active first
        self._owner: dict[str, str] = {}  # Uniqueid -> Linkedid, outlives Hangup
        self._finished: OrderedDict[str, tuple[float, tuple[str, ...]]] = OrderedDict()
        self._ready: list[CallRecord] = []

    @property
    def open_calls(self) -> int:
        return len(self._calls)

    @property
    def known_channels(self) -> int:
        return len(self._owner)

    def feed(self, event: Mapping[str, str], received_at: float) -> None:
        try:
            self._feed(event, received_at)
        except Exception:  # a malformed event must never stop the journal
            log.exception("AMI event %r ignored", _get(event, "Event")[:40])

    def due(self, now: float) -> list[CallRecord]:
        """Calls over for `grace_s` (or silent for `max_idle_s`); each is returned once."""
        self._forget(now)
        for call in list(self._calls.values()):
            idle = now - call.last_seen
            if (call.over() and idle >= self._grace_s) or idle >= self._max_idle_s:
                self._finish(call, now)
        ready, self._ready = self._ready, []
        return ready

    def flush(self) -> list[CallRecord]:
        for call in list(self._calls.values()):
            self._finish(call, call.last_seen)
        ready, self._ready = self._ready, []
        return ready

    def lost(self, at: float) -> None:
        """The AMI connection was lost at `at`: every open call was up until then."""
        moment = datetime.fromtimestamp(at, UTC)
        for call in self._calls.values():
            call.lost_at = moment

    def reconcile(self, channels: Iterable[Mapping[str, str]], listed_at: float) -> int:
        """After a reconnect: close the open calls none of whose channels Asterisk still has.

        `channels` are the channels Asterisk listed (`CoreShowChannel` or `Status` events,
        with `Uniqueid` and `Linkedid`) when asked at `listed_at`; a call heard of since then
        is left alone. A channel not listed is gone (its `Hangup` was missed). The closed
        calls come out of the next `due()`, ending as `CallState.end` says. Returns how many.
        """
        listed: dict[str, set[str]] = {}  # Linkedid -> Uniqueids
        for channel in channels:
            listed.setdefault(_get(channel, "Linkedid"), set()).add(_get(channel, "Uniqueid"))
        uids = set().union(*listed.values())
        closed = 0
        for call in list(self._calls.values()):
            if call.last_seen >= listed_at:
                continue
            alive = listed.get(call.linkedid, set()) | {
                uid for uid, up in call.legs.items() if up and uid in uids}
            if not alive:
                self._finish(call, listed_at)
                closed += 1
                continue
            for uid in call.legs:  # the others hung up while we were away
                call.legs[uid] = call.legs[uid] and uid in alive
            for uid in alive:
                call.legs.setdefault(uid, True)
        return closed

    # -- event intake -------------------------------------------------------------------

    def _feed(self, event: Mapping[str, str], received_at: float) -> None:
        name = _get(event, "Event")
        if not name:
            return  # `Response:` blocks and garbage
        linkedid = self._linkedid(event)
        if not linkedid or len(linkedid) > MAX_ID_LEN or linkedid in self._finished:
            return
        call = self._call(linkedid, received_at)
        at = event_time(event, received_at)
        if call.seen_at is None or at < call.seen_at:
            call.seen_at = at
        if call.last_at is None or at > call.last_at:
            call.last_at = at
        self._leg(call, event)
        handler = _HANDLERS.get(name)
        if handler is not None:
            handler(self, call, event, at)

    def _linkedid(self, event: Mapping[str, str]) -> str:
        for key in ("Linkedid", "DestLinkedid", "TransfereeLinkedid", "TransfererLinkedid",
                    "OrigTransfererLinkedid"):
            if value := _get(event, key):
                return value
        uid = _get(event, "Uniqueid") or _get(event, "UniqueID")
        return self._owner.get(uid, "")

    def _call(self, linkedid: str, received_at: float) -> CallState:
        call = self._calls.get(linkedid)
        if call is None:
            call = self._calls[linkedid] = CallState(linkedid, received_at)
            if len(self._calls) > self._max_calls:
                oldest = next(iter(self._calls.values()))
                log.warning("more than %d open calls: finalizing %s early",
                            self._max_calls, oldest.linkedid)
                self._finish(oldest, received_at)
        else:
            self._calls.move_to_end(linkedid)
        call.last_seen = max(call.last_seen, received_at)
        return call

    def _leg(self, call: CallState, event: Mapping[str, str]) -> None:
        """Channel bookkeeping for events about one channel (they carry Uniqueid + Linkedid)."""
        uid = _get(event, "Uniqueid")
        if not uid or not _get(event, "Linkedid"):
            return
        previous = self._owner.get(uid)
        if previous is not None and previous != call.linkedid and previous in self._calls:
            self._calls[previous].legs[uid] = False  # the channel moved to another linked id
        self._owner[uid] = call.linkedid
        call.legs.setdefault(uid, True)
        if not call.first_uid or (uid == call.linkedid and call.first_uid != uid):
            call.first_uid, call.first_channel, call.first_caller = uid, "", ""
            call.first_exten, call.started_at = "", None
        if uid == call.first_uid:
            call.first_channel = call.first_channel or _get(event, "Channel")
            number = _get(event, "CallerIDNum")
            if not call.first_caller and number not in NO_NUMBER:
                call.first_caller = number

    # -- handlers (one per event name) ---------------------------------------------------

    def _on_newchannel(self, call: CallState, event: Mapping[str, str], at: datetime) -> None:
        if _get(event, "Uniqueid") == call.first_uid:
            call.first_exten = call.first_exten or _get(event, "Exten")
            call.started_at = at

    def _on_hangup(self, call: CallState, event: Mapping[str, str], at: datetime) -> None:
        uid = _get(event, "Uniqueid")
        if uid in call.legs:
            call.legs[uid] = False
        if call.ended_at is None or at > call.ended_at:
            call.ended_at = at

    def _on_dial_begin(self, call: CallState, event: Mapping[str, str], at: datetime) -> None:
        if not _get(event, "Channel"):
            return  # the Originate's own first leg
        target = endpoint(_get(event, "DestChannel"))
        if self._is_internal(target):
            _add(call.rang, target)
        elif not call.dialed and _get(event, "Exten") not in NO_NUMBER:
            call.dialed = _get(event, "Exten")

    def _on_dial_end(self, call: CallState, event: Mapping[str, str], at: datetime) -> None:
        if not _get(event, "Channel"):
            return
        status = _get(event, "DialStatus").upper()
        target = endpoint(_get(event, "DestChannel"))
        if self._is_internal(target):
            if status == "ANSWER" and call.employee_answer is None:
                call.employee_answer = (target, at)
            elif status not in ("ANSWER", "CANCEL") or not call.employee_status:
                call.employee_status = status
        elif status == "ANSWER":
            call.external_answer = call.external_answer or at
        elif status != "CANCEL" or not call.external_status:
            call.external_status = status

    def _on_agent_connect(self, call: CallState, event: Mapping[str, str], at: datetime) -> None:
        self._on_queue(call, event, at)
        member = endpoint(_get(event, "DestChannel")) or endpoint(_get(event, "Interface"))
        if call.employee_answer is None and self._is_internal(member):
            call.employee_answer = (member, at)

    def _on_queue(self, call: CallState, event: Mapping[str, str], at: datetime) -> None:
        call.queue = call.queue or _get(event, "Queue")

    def _on_varset(self, call: CallState, event: Mapping[str, str], at: datetime) -> None:
        variable, value = _get(event, "Variable").lstrip("_").upper(), _get(event, "Value")
        if variable == "MIXMONITOR_FILENAME" and value:
            call.recording = call.recording or value
        elif variable == "QUEUESTATUS":
            call.queue_status = value.upper()
        elif variable in ("DID", "CRM_DID") and value:
            call.did_var = call.did_var or value
        elif variable.startswith(UTM_PREFIX) and value:
            _tag(call.utm, "utm_" + variable[len(UTM_PREFIX):].lower()[:32], value[:256])

    def _on_newexten(self, call: CallState, event: Mapping[str, str], at: datetime) -> None:
        app, data = _get(event, "Application").lower(), _get(event, "AppData")
        if app == "voicemail":
            call.voicemail = True
        elif app == "mixmonitor" and data:
            call.recording_arg = call.recording_arg or data.split(",", 1)[0]
        elif app == "queue" and data:
            call.queue = call.queue or data.split(",", 1)[0]

    def _on_blind_transfer(self, call: CallState, event: Mapping[str, str], at: datetime) -> None:
        if _get(event, "Result") not in ("", "Success"):
            return
        self._add_transfer(call, Transfer.model_validate({
            "type": "blind", "from": self._party(event, "Transferer"),
            "to": _get(event, "Extension") or None, "context": _get(event, "Context") or None,
            "at": at}))

    def _on_attended_transfer(self, call: CallState, event: Mapping[str, str],
                              at: datetime) -> None:
        if _get(event, "Result") not in ("", "Success"):
            return
        target = (endpoint(_get(event, "TransferTargetChannel"))
                  or endpoint(_get(event, "SecondTransfererChannel")))
        self._add_transfer(call, Transfer.model_validate({
            "type": "attended", "from": self._party(event, "OrigTransferer"),
            "to": target or None, "at": at}))

    # -- helpers -----------------------------------------------------------------------

    def _is_internal(self, value: str) -> bool:
        return bool(value) and self._internal.match(value) is not None

    def _party(self, event: Mapping[str, str], prefix: str) -> str | None:
        device = endpoint(_get(event, f"{prefix}Channel"))
        if self._is_internal(device):
            return device
        return _get(event, f"{prefix}CallerIDNum") or device or None

    def _add_transfer(self, call: CallState, transfer: Transfer) -> None:
        if transfer not in call.transfers and len(call.transfers) < MAX_LIST:
            call.transfers.append(transfer)

    def _finish(self, call: CallState, now: float) -> None:
        del self._calls[call.linkedid]
        self._finished[call.linkedid] = (now, tuple(call.legs))
        try:
            self._ready.append(call_record(call, region=self._region,
                                           is_internal=self._is_internal))
        except Exception:  # keep due()/flush() total: one bad call must not block the others
            log.exception("call %s dropped: no valid record", call.linkedid)

    def _forget(self, now: float) -> None:
        while self._finished:
            linkedid, (finished_at, uids) = next(iter(self._finished.items()))
            if now - finished_at < self._retain_s and len(self._finished) <= self._max_calls:
                break
            del self._finished[linkedid]
            for uid in uids:
                if self._owner.get(uid) == linkedid:
                    del self._owner[uid]

def _add(items: list[str], value: str) -> None:
    if value not in items and len(items) < MAX_LIST:
        items.append(value)


def _tag(tags: dict[str, str], key: str, value: str) -> None:
    """The latest value of a tag wins; at most MAX_UTM tags."""
    if key in tags or len(tags) < MAX_UTM:
        tags[key] = value


_HANDLERS = {
    "Newchannel": CallTracker._on_newchannel,
    "Hangup": CallTracker._on_hangup,
    "DialBegin": CallTracker._on_dial_begin,
    "DialEnd": CallTracker._on_dial_end,
    "AgentConnect": CallTracker._on_agent_connect,
    "AgentCalled": CallTracker._on_queue,
    "QueueCallerJoin": CallTracker._on_queue,
    "QueueCallerLeave": CallTracker._on_queue,
    "QueueCallerAbandon": CallTracker._on_queue,
    "VarSet": CallTracker._on_varset,
    "Newexten": CallTracker._on_newexten,
    "BlindTransfer": CallTracker._on_blind_transfer,
    "AttendedTransfer": CallTracker._on_attended_transfer,
}
