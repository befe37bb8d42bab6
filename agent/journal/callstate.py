"""One call's state as AMI events build it, and the `CallRecord` it becomes once over (§7.1).

Pure. How events fill the state, and why the record reads it as it does (direction from the
first channel, "answered" only when an employee was connected, queue timeout vs abandon),
is told in `agent.journal.calltrack`, from real Asterisk 22 traces.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from agent.core.model import CallRecord, Outcome, Transfer
from agent.core.phones import is_withheld, normalize

NO_NUMBER = frozenset({"", "<unknown>", "s"})
_CHANNEL_SUFFIX = re.compile(r"-[0-9a-fA-F]+$")
_QUEUE_NOBODY = frozenset({"FULL", "JOINEMPTY", "LEAVEEMPTY", "JOINUNAVAIL", "LEAVEUNAVAIL"})
_DIAL_OUTCOMES: dict[str, Outcome] = {
    "BUSY": "busy", "NOANSWER": "no_answer", "CONGESTION": "failed", "CHANUNAVAIL": "failed",
    "INVALIDARGS": "failed", "DONTCALL": "failed", "TORTURE": "failed",
}


def endpoint(channel: str) -> str:
    """The device part of a channel name: `PJSIP/201-00000012` and `Local/201@x-1f;1` -> `201`."""
    _, _, rest = channel.partition("/")
    if "@" in rest:
        return rest.split("@", 1)[0]
    return _CHANNEL_SUFFIX.sub("", rest.split(";", 1)[0])


@dataclass
class CallState:
    """One call as its AMI events have shown it so far (`agent.journal.calltrack` folds them in)."""

    linkedid: str
    last_seen: float
    legs: dict[str, bool] = field(default_factory=dict)  # Uniqueid -> still up
    first_uid: str = ""
    first_channel: str = ""
    first_caller: str = ""
    first_exten: str = ""
    did_var: str = ""
    dialed: str = ""
    started_at: datetime | None = None
    seen_at: datetime | None = None
    last_at: datetime | None = None  # the latest event
    lost_at: datetime | None = None  # the AMI connection was lost while the call was open
    ended_at: datetime | None = None  # the latest Hangup
    employee_answer: tuple[str, datetime] | None = None
    external_answer: datetime | None = None
    employee_status: str = ""
    external_status: str = ""
    rang: list[str] = field(default_factory=list)
    queue: str = ""
    queue_status: str = ""
    voicemail: bool = False
    recording: str = ""
    recording_arg: str = ""  # MixMonitor's argument, when MIXMONITOR_FILENAME is missing
    transfers: list[Transfer] = field(default_factory=list)
    utm: dict[str, str] = field(default_factory=dict)  # CRM_UTM_* channel variables

    def over(self) -> bool:
        return bool(self.legs) and not any(self.legs.values())

    def end(self) -> datetime | None:
        """The last Hangup once every channel hung up; for a call closed without its Hangups
        (Asterisk crashed, an event was lost), the last moment it was known to be up: its
        last event, or when the AMI connection was lost, whichever is later."""
        if self.over() and self.ended_at is not None:
            return self.ended_at
        known = [at for at in (self.last_at, self.lost_at, self.ended_at) if at is not None]
        return max(known, default=None)


def call_record(call: CallState, *, region: str,
                is_internal: Callable[[str], bool]) -> CallRecord:
    """What a finished call becomes; `is_internal` tells an employee's extension."""
    device = endpoint(call.first_channel)
    outbound = is_internal(device) or is_internal(call.first_caller)
    answered_at, answered_by, placed_by = None, None, None
    if outbound:
        placed_by = device if is_internal(device) else call.first_caller
        if call.external_answer is not None:
            answered_at, answered_by = call.external_answer, placed_by
        caller_raw = call.dialed or None
        did_raw = None
    else:
        if call.employee_answer is not None:
            answered_by, answered_at = call.employee_answer
        caller_raw = call.first_caller or None
        did_raw = call.first_exten if call.first_exten not in NO_NUMBER else call.did_var
    answered = answered_at is not None
    return CallRecord(
        call_id=call.linkedid, direction="outbound" if outbound else "inbound",
        caller=normalize(caller_raw, region), caller_raw=caller_raw,
        anonymous=not outbound and is_withheld(caller_raw),
        did=normalize(did_raw, region) if did_raw else None, did_raw=did_raw or None,
        answered=answered, answered_by=answered_by, placed_by=placed_by,
        queue=call.queue or None, outcome=_outcome(call, outbound, answered),
        recording=(call.recording or call.recording_arg or None) if answered else None,
        started_at=call.started_at or call.seen_at, answered_at=answered_at,
        ended_at=call.end(), rang=list(call.rang), transfers=list(call.transfers),
        utm=dict(call.utm))

def _outcome(call: CallState, outbound: bool, answered: bool) -> Outcome:
    if answered:
        return "answered"
    if outbound:
        return _DIAL_OUTCOMES.get(call.external_status, "no_answer" if call.dialed
                                  else "failed")
    if call.voicemail:
        return "voicemail"
    if call.queue:
        if call.queue_status == "TIMEOUT":
            return "queue_timeout"
        return "no_answer" if call.queue_status in _QUEUE_NOBODY else "abandoned"
    if call.employee_status == "CANCEL":
        return "abandoned"  # the caller hung up while the phone rang
    return _DIAL_OUTCOMES.get(call.employee_status, "no_answer")
