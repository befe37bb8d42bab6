"""No phone number, name or secret reaches the log (issue #11, spec §9): `crm-agent serve` at
DEBUG, driven through every path that logs a caller, with numbers in every written form."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import TOKEN
from tests.net.fake_asterisk import call, load_env, retarget
from tests.net.test_serve import REPO, free_port, wait_healthy

NUMBERS = ("+33612345678", "0033612345679", "0612345670", "06 12 34 56 71", "06.12.34.56.72",
           "06-12-34-56-73", "+33 6 12 34 56 74", "+33 (0)6 12 34 56 75", "+1 (415) 555-2671")
NAME = "Zébulon Quatremare"
SEP = r"[\s.\-/()*]*"


def spelled(number: str) -> re.Pattern[str]:
    """The number's last 8 digits, whatever is written between them: a masked number keeps
    at most 3 at each end."""
    digits = [c for c in number if c.isdigit()][-8:]
    return re.compile(SEP.join(digits))


def leaks(logs: str) -> list[str]:
    found = [n for n in NUMBERS if spelled(n).search(logs)]
    return found + [s for s in (NAME, "Quatremare", TOKEN, "hook-secret") if s in logs]


async def drive(http_port: int, agi_port: int) -> None:
    base = f"http://127.0.0.1:{http_port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(base, headers=headers) as http:
        async with http.post("/api/contacts", json={"first_name": NAME,
                                                     "phones": [NUMBERS[0]]}) as resp:
            assert resp.status == 201, await resp.text()
        async with http.post("/api/contacts", json={"first_name": NAME,
                                                     "phones": "not a phone"}) as resp:
            assert resp.status == 422
        for i, number in enumerate(NUMBERS):
            env = load_env().replace(b"agi_callerid: +33612345678",
                                     b"agi_callerid: " + number.encode())
            assert (await call(agi_port, env)).variables["CRM_ROUTE_TYPE"]
            for path in ("/crm", "/route"):
                async with http.get(path, params={"field_name": "contact.name",
                                                  "callerid": number}) as resp:
                    assert resp.status < 500
            async with http.get("/api/contacts", params={"phone": number}) as resp:
                assert resp.status < 500
            async with http.post("/events/call", json={
                    "call_id": f"p{i}", "caller": number, "started_at": "2026-12-01T09:00:00Z",
                    "answered_by": "201"}) as resp:
                assert resp.status == 202, await resp.text()
            async with http.post("/leads", json={"prenom": NAME, "tel_mobile": number,
                                                 "RGPD": "1"}) as resp:
                assert resp.status < 500
            async with http.post("/admin/rules/test", json={"caller": number}) as resp:
                assert resp.status < 500
        async with http.post("/leads", data="tel_mobile=0612345670&prenom=x",
                             headers={"Content-Type": "application/x-www-form-urlencoded; "
                                                      "charset=no-such"}) as resp:
            assert resp.status == 400
    await call(agi_port, retarget(load_env(), NUMBERS[2]))  # unknown script named by a number
    reader, writer = await asyncio.open_connection("127.0.0.1", agi_port)
    writer.write(b"agi_network_script: route\nagi_callerid " + NUMBERS[3].encode() + b"\n\n")
    await reader.read()  # a malformed env block
    writer.close()
    for line in (b"GET /crm?token=" + TOKEN.encode() + b"&callerid=0612345670\x01 HTTP/1.1",
                 b"GET /route?callerid=" + NUMBERS[4].encode() + b"&x=" + b"9" * 9000):
        reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
        writer.write(line + b"\r\nHost: x\r\n\r\n")
        await reader.read()  # a request line aiohttp rejects
        writer.close()


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_no_number_name_or_secret_in_the_debug_log(tmp_path: Path, log_format: str) -> None:
    http_port, agi_port = free_port(), free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(json.dumps({
        "store": {"url": "sqlite:///var/agent.db"}, "log_level": "DEBUG",
        "log_format": log_format, "http": {"port": http_port, "token": TOKEN,
                                           "webhook_secret": "webhook-secret"},
        "agi": {"port": agi_port}, "rules": {"dir": str(REPO / "rules")}}))
    log_path = tmp_path / "agent.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "--config", str(config), "serve",
            stderr=log, stdout=log)
    try:
        await wait_healthy(http_port, proc)
        await drive(http_port, agi_port)
        await asyncio.sleep(1.5)  # the decision log and the outbox run in the background
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)
    logs = log_path.read_text(errors="replace")
    assert "agi: unknown script" in logs and "rejected a request" in logs, logs[-3000:]
    assert "malformed env" in logs and "agi: route 1796088099.1 answered" in logs
    assert all(f"call p{i} from" in logs for i in range(len(NUMBERS)))  # journal lines
    assert leaks(logs) == [], [line for line in logs.splitlines() if leaks(line)][:5]
