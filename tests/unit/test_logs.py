from __future__ import annotations

import json
import logging

from agent.ops.logs import JsonFormatter, scrub


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
    from agent.ops.logs import TextFormatter

    line = TextFormatter("%(asctime)s %(message)s").format(record("caller %s", "0612345678"))
    assert line[:4].isdigit() and line[4] == "-" and "*" not in line[:20]
    assert "0612345678" not in line


NUMBERS = ("+33612345678", "0033612345678", "0612345678", "06 12 34 56 78", "06.12.34.56.78",
           "06-12-34-56-78", "+33 6 12 34 56 78", "+33 (0)6 12 34 56 78", "+1 (415) 555-2671")


def digits_left(text: str, number: str) -> bool:
    """Whether 5 consecutive digits of `number` survive in `text`."""
    plain = "".join(c for c in number if c.isdigit())
    flat = "".join(c for c in text if c.isdigit() or c == "*")
    return any(plain[i:i + 5] in flat for i in range(len(plain) - 4))


def test_a_number_right_after_a_date_is_masked() -> None:
    for number in NUMBERS:
        text = scrub(f"2026-12-01 {number} called")
        assert text.startswith("2026-12-01 ") and not digits_left(text[11:], number), text
        text = scrub(f"at 2026-12-01T03:09:50.123 from {number}")
        assert "2026-12-01T03:09:50.123" in text and not digits_left(text[27:], number), text


def test_every_number_of_a_list_is_masked() -> None:
    for first in NUMBERS:
        for second in NUMBERS:
            text = scrub(f"callers {first} {second}")
            assert not digits_left(text, first) and not digits_left(text, second), text


def test_ids_with_long_digit_runs_are_kept() -> None:
    for kept in ("call pbx-1733051234-ab", "id c1733051234", "linkedid 1733051234.42"):
        assert scrub(kept) == kept


def test_call_ids_are_kept_numbers_after_them_are_not() -> None:
    for kept in ("call 1733059200 from +336****678: queued", "outbox call:1733059200 is dead",
                 "call_id=1733059200", "agi: route (uniqueid 1733059200.5)",
                 "queue support (1796088768.116)", "call k1733059200: journal callback failed",
                 "call pbx1-1796088768.116 inbound answered", "Linkedid: 1733059200"):
        assert scrub(kept) == kept
    for number in NUMBERS:
        for text in (f"call {number}", f"call from {number}", f"caller {number}",
                     f"recall {number}", f"call 1733059200 from {number}"):
            assert not digits_left(scrub(text).replace("1733059200", ""), number), text
