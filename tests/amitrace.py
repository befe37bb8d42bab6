"""Recorded AMI traces (tests/fixtures/ami): parse the raw stream, load the expected calls.

A trace is raw AMI: `Key: Value` lines ending in CRLF, one blank line after each message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from agent.core.model import CallRecord

AMI_DIR = Path(__file__).parent / "fixtures" / "ami"
TIME_FIELDS = ("started_at", "answered_at", "ended_at")


@dataclass(frozen=True)
class Trace:
    name: str
    raw: bytes
    expected: list[CallRecord]

    @property
    def events(self) -> list[dict[str, str]]:
        return parse(self.raw)


def parse(raw: bytes) -> list[dict[str, str]]:
    """Split a raw AMI byte stream into messages (header name -> value, as in the stream)."""
    messages = []
    for block in raw.decode("utf-8").split("\r\n\r\n"):
        headers = {}
        for line in block.split("\r\n"):
            key, sep, value = line.partition(":")
            if sep and key:
                headers[key] = value.strip()
        if headers:
            messages.append(headers)
    return messages


def strip_timestamps(raw: bytes) -> bytes:
    """The same stream as a PBX with `timestampevents = no` would send it."""
    lines = raw.split(b"\r\n")
    return b"\r\n".join(line for line in lines if not line.startswith(b"Timestamp:"))


def load_expected(path: Path) -> list[CallRecord]:
    """The expected calls, restricted to the fields CallRecord has."""
    fields = set(CallRecord.model_fields)
    data = json.loads(path.read_text())
    return [CallRecord.model_validate({k: v for k, v in call.items() if k in fields})
            for call in data["calls"]]


def traces() -> list[Trace]:
    found = []
    for path in sorted(AMI_DIR.glob("*.ami.txt")):
        name = path.name.removesuffix(".ami.txt")
        expected = load_expected(AMI_DIR / f"{name}.expected.json")
        found.append(Trace(name, path.read_bytes(), expected))
    return found


def channels_up(events: list[dict[str, str]]) -> list[dict[str, str]]:
    """The channels a trace cut here leaves up: each `Newchannel` not followed by its
    `Hangup`, with the snapshot headers Asterisk would list it with."""
    up: dict[str, dict[str, str]] = {}
    for event in events:
        uid = event.get("Uniqueid", "")
        if event.get("Event") == "Newchannel":
            up[uid] = {k: v for k, v in event.items() if k not in ("Event", "Privilege",
                                                                    "Timestamp")}
        elif event.get("Event") == "Hangup":
            up.pop(uid, None)
    return list(up.values())
