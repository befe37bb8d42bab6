from __future__ import annotations

import json
import logging

from agent.logs import JsonFormatter, scrub


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("agent.test", logging.INFO, __file__, 1, message, args, None)


def test_json_lines_mask_phone_numbers_that_slipped_through() -> None:
    line = JsonFormatter().format(record("lookup of %s took %d ms", "+33612345678", 3))
    entry = json.loads(line)
    assert entry["level"] == "INFO" and entry["logger"] == "agent.test"
    assert "+33612345678" not in entry["msg"] and "3 ms" in entry["msg"]


def test_scrub_masks_every_written_form() -> None:
    for number in ("+33612345678", "0033612345678", "06 12 34 56 78", "06.12.34.56.78"):
        assert "345" not in scrub(f"caller {number} routed"), number
    assert scrub("took 250 ms, rule 12") == "took 250 ms, rule 12"
    for kept in ("listening on 127.0.0.1:8080", "at 2026-12-01 03:09:50", "call 1796088768.116",
                 "peer 192.168.100.200:5060"):
        assert scrub(kept) == kept


def test_text_lines_keep_their_timestamp_and_mask_the_message() -> None:
    from agent.logs import TextFormatter

    line = TextFormatter("%(asctime)s %(message)s").format(record("caller %s", "0612345678"))
    assert line[:4].isdigit() and line[4] == "-" and "*" not in line[:20]
    assert "0612345678" not in line
