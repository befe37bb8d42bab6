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

_NUMBER = re.compile(r"\+?\d[\d .-]{6,}\d")


def _mask(match: re.Match[str]) -> str:
    digits = match.group(0)
    return digits[:4] + "*" * (len(digits) - 6) + digits[-2:]


def scrub(text: str) -> str:
    return _NUMBER.sub(_mask, text)


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
        return scrub(super().format(record))


def setup(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
