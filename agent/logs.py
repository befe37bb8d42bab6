"""Structured logs: one JSON object a line, phone numbers masked as a safety net (RGPD).

Call sites already mask what they log (`phones.mask`); the filter below also masks any
long digit run that slipped through, so a raw number never reaches the journal.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

_TOKEN = re.compile(r"\+?\d[\d .-]*\d")
_PHONE = re.compile(r"\+?\d(?:[ .-]?\d){7,16}")
_NOT_A_PHONE = re.compile(
    r"\d{1,3}(?:\.\d{1,3}){3}"  # IPv4
    r"|\d{4}-\d\d-\d\d(?:[ T].*)?"  # dates
    r"|\d{9,}\.\d+")  # Asterisk uniqueid / linkedid


def _mask(match: re.Match[str]) -> str:
    token = match.group(0)
    if _NOT_A_PHONE.fullmatch(token) or not _PHONE.fullmatch(token.strip()):
        return token
    return token[:4] + "*" * (len(token) - 6) + token[-2:]


def scrub(text: str) -> str:
    """Mask anything shaped like a phone number (8 to 17 digits, optional separators)."""
    return _TOKEN.sub(_mask, text)


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
