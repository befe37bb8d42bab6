"""Signed webhooks cannot be replayed (issue #11): over real HTTP against the real agent,
plus the bounded memory of seen signatures on its own."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agent.app import Agent
from agent.http.webhook import SIGNATURE_MAX_AGE_S, SeenSignatures, Signature
from tests.conftest import AgentFactory
from tests.net.leadkit import Client, make_rules_dir, signature, start

LEAD = {"prenom": "Jean", "tel_mobile": "06 12 34 56 78", "RGPD": "1"}


@pytest.fixture
async def agent(start_agent: AgentFactory, tmp_path: Path) -> Agent:
    return await start(start_agent, make_rules_dir(tmp_path))


async def test_a_replayed_signed_lead_has_no_effect(api: Client) -> None:
    raw, now = json.dumps(LEAD).encode(), time.time()
    header = signature(raw, at=now)
    status, first = await api.signed("/leads", LEAD, header)
    assert status == 201, first
    status, again = await api.signed("/leads", LEAD, header)
    assert (status, again["duplicate"]) == (200, True), again
    stamp, digest = header.split(",v1=")
    status, again = await api.signed("/leads", LEAD, f"{stamp},v1={digest.upper()}")
    assert (status, again.get("duplicate")) == (200, True), again
    (lead,) = await api.get("/api/leads")
    assert lead["fields"]["submissions"] == 1
    assert len(await api.get("/api/contacts")) == 1
    status, fresh = await api.signed("/leads", LEAD, signature(raw, at=now - 10))
    assert (status, fresh["result"]) == (200, "updated"), fresh  # a new signature: a resubmission
    (lead,) = await api.get("/api/leads")
    assert lead["fields"]["submissions"] == 2


async def test_a_signature_from_the_future_or_the_past_is_refused(api: Client) -> None:
    raw = json.dumps(LEAD).encode()
    for at, words in ((time.time() + 360, "ahead"), (time.time() - 360, "older")):
        status, answer = await api.signed("/leads", LEAD, signature(raw, at=at))
        assert (status, answer["error"]) == (401, "bad-signature"), answer
        assert words in answer["detail"]
    status, answer = await api.signed("/leads", LEAD, signature(raw, at=time.time() + 240))
    assert status == 201, answer  # within the window either way
    assert len(await api.get("/api/leads")) == 1


async def test_a_refused_request_is_not_remembered(api: Client) -> None:
    """A sender retries what failed: the same signature is then handled afresh."""
    body = {"project_id": "P000001-ABCDEF", "outcome": "ACCORD", "reason": "RDV PHYSIQUE",
            "followed_by": "201"}
    header = signature(json.dumps(body).encode())
    for _ in range(2):
        status, answer = await api.signed("/dispositions", body, header)
        assert (status, answer["error"]) == (404, "not-found"), answer


async def test_a_replayed_call_event_is_a_duplicate(api: Client) -> None:
    call = {"call_id": "r1", "caller": "0612345678", "started_at": "2026-11-30T09:00:00Z"}
    header = signature(json.dumps(call).encode())
    status, answer = await api.signed("/events/call", call, header)
    assert (status, answer["accepted"]) == (202, True), answer
    status, answer = await api.signed("/events/call", call, header)
    assert (status, answer) == (200, {"duplicate": True, "detail": answer["detail"]})


def test_seen_signatures_pending_done_and_forgotten() -> None:
    seen, now = SeenSignatures(), 1_000_000.0
    first = Signature(int(now), b"a" * 32)
    assert seen.claim(first, now) == "new"
    assert seen.claim(first, now) == "pending"
    seen.settle(first, done=True)
    assert seen.claim(first, now + SIGNATURE_MAX_AGE_S - 1) == "done"
    assert seen.claim(first, now + SIGNATURE_MAX_AGE_S) == "new"  # too old to be accepted now
    failed = Signature(int(now), b"b" * 32)
    assert seen.claim(failed, now) == "new"
    seen.settle(failed, done=False)
    assert seen.claim(failed, now) == "new"


def test_seen_signatures_forget_the_oldest_when_full() -> None:
    seen, now = SeenSignatures(size=2), 1_000_000.0
    signatures = [Signature(int(now), bytes([n]) * 32) for n in range(3)]
    for sig in signatures:
        assert seen.claim(sig, now) == "new"
        seen.settle(sig, done=True)
    assert len(seen) == 2
    assert seen.claim(signatures[2], now) == "done"
    assert seen.claim(signatures[0], now) == "new"  # evicted: the bound wins over the memory
    future = Signature(int(now) + 200, b"f" * 32)  # kept until its own time leaves the window
    seen.claim(future, now)
    seen.settle(future, done=True)
    assert seen.claim(future, now + SIGNATURE_MAX_AGE_S + 100) == "done"
