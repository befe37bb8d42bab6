"""Structured logs: one JSON object a line, phone numbers masked as a safety net (RGPD).

Call sites already mask what they log (`phones.mask`); the filter below also masks any
long digit run that slipped through, so a raw number never reaches the journal.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from datetime import UTC, datetime

_SCAN = re.compile(
    r"(?P<keep>\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?)?"  # dates, times
    r"|\d{1,3}(?:\.\d{1,3}){3}(?!\.?\d)(?::\d+)?"  # IPv4, with a port
    r"|\(?\d{9,}\.\d+"  # Asterisk uniqueid / linkedid
    # the id after a label the agent writes (`call 1733059200`, `call:…`, `uniqueid …`),
    # unless it starts like a phone number (+, 0)
    r"|\b(?i:call(?:_id)?|linkedid|uniqueid)[ :=]+(?![+0(])\w[\w.\-]*)"
    # 8 digits or more with separators, `+33 (0)6 ...` included; a run of several numbers is
    # masked whole. Digits glued to letters are ids (`call-ab12...`), not numbers.
    r"|(?<![\w-])(?P<phone>\+?\(?\d(?:[ .\-/()]{0,2}\d){7,})(?!-?\w)")


def _mask(match: re.Match[str]) -> str:
    token = match.group("phone")
    if token is None:
        return match.group(0)
    return token[:4] + "*" * (len(token) - 6) + token[-2:]


def scrub(text: str) -> str:
    """Mask anything shaped like a phone number (8 digits or more, optional separators);
    dates, times, IPv4 addresses, Asterisk uniqueids and call ids are kept."""
    return _SCAN.sub(_mask, text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        if record.exc_info:
            entry["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        clean = logging.makeLogRecord({**record.__dict__, "msg": scrub(record.getMessage()),
                                       "args": None})
        text = super().format(clean)
        return text if not record.exc_info else scrub(text)


def setup(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class Throttle:
    """Lets one line through per `interval_s`; counts what it held back in between."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._next = 0.0
        self._held = 0

    def allow(self) -> tuple[bool, int]:
        """Whether to log now, and how many lines were held back since the last one."""
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return False, 0
        held, self._held, self._next = self._held, 0, now + self.interval_s
        return True, held


class ServerLog:
    """Stands in for aiohttp's `aiohttp.server` logger, which logs a rejected request with
    its raw request line (`token=` included) and a traceback each time: a cheap log flood.
    Here a rejection is one line, the error's type and the peer only, throttled."""

    def __init__(self, logger: logging.Logger, interval_s: float = 1.0) -> None:
        self._log = logger
        self._throttle = Throttle(interval_s)

    def exception(self, _msg: str, *args: object, exc_info: object = None, **_kw: object) -> None:
        self._line(logging.WARNING, args, exc_info)

    def error(self, _msg: str, *args: object, exc_info: object = None, **_kw: object) -> None:
        self._line(logging.WARNING, args, exc_info)

    def warning(self, _msg: str, *args: object, exc_info: object = None, **_kw: object) -> None:
        self._line(logging.WARNING, args, exc_info)

    def info(self, _msg: str, *args: object, exc_info: object = None, **_kw: object) -> None:
        self._line(logging.DEBUG, args, exc_info)

    def debug(self, _msg: str, *args: object, exc_info: object = None, **_kw: object) -> None:
        self._line(logging.DEBUG, args, exc_info)

    def _line(self, level: int, args: tuple[object, ...], exc_info: object) -> None:
        if not self._log.isEnabledFor(level):
            return
        allowed, held = self._throttle.allow()
        if not allowed:
            return
        peer = args[0] if args and isinstance(args[0], str) else "a peer"
        status = getattr(exc_info, "code", None) or getattr(exc_info, "status", None)
        kind = type(exc_info).__name__ if isinstance(exc_info, BaseException) else "error"
        more = f"; {held} more since the last such line" if held else ""
        self._log.log(level, "http: rejected a request from %s (%s%s)%s", peer, kind,
                      f", {status}" if status else "", more)
