"""Helpers of the leads tests (§8): a rules directory, an HTTP client with short verbs."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.app import Agent
from tests.conftest import AgentFactory, auth

REPO_RULES = Path(__file__).parents[2] / "rules"
SECRET = "webhook-secret"
Json = Any


def make_rules_dir(tmp_path: Path, **files: str) -> Path:
    """The repo's rules plus `files` (name without `.yaml` -> text)."""
    directory = tmp_path / "rules"
    shutil.copytree(REPO_RULES, directory)
    for name, text in files.items():
        (directory / f"{name}.yaml").write_text(text, encoding="utf-8")
    return directory


async def start(start_agent: AgentFactory, rules_dir: Path) -> Agent:
    return await start_agent(CRM_AGENT_RULES__DIR=str(rules_dir),
                             CRM_AGENT_AGI__ENABLED="false",
                             CRM_AGENT_WEBHOOK_SECRET=SECRET)


def signature(body: bytes, *, secret: str = SECRET, at: float | None = None) -> str:
    stamp = int(time.time() if at is None else at)
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    return f"t={stamp},v1={digest.hexdigest()}"


class Client:
    """The agent's HTTP API with the bearer token, answering (status, JSON)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Json]:
        kwargs.setdefault("headers", auth())
        async with self.session.request(method, path, **kwargs) as resp:
            return resp.status, await resp.json()

    async def lead(self, body: dict[str, Any]) -> Json:
        status, answer = await self.call("POST", "/leads", json=body)
        assert status in (200, 201), answer
        return answer

    async def dispose(self, body: dict[str, Any]) -> tuple[int, Json]:
        return await self.call("POST", "/dispositions", json=body)

    async def get(self, path: str) -> Json:
        status, answer = await self.call("GET", path)
        assert status == 200, answer
        return answer

    async def patch(self, path: str, body: dict[str, Any]) -> Json:
        status, answer = await self.call("PATCH", path, json=body)
        assert status == 200, answer
        return answer

    async def post(self, path: str, body: dict[str, Any]) -> Json:
        status, answer = await self.call("POST", path, json=body)
        assert status == 201, answer
        return answer

    async def signed(self, path: str, body: dict[str, Any], header: str | None = None
                     ) -> tuple[int, Json]:
        raw = json.dumps(body).encode()
        headers = {"Content-Type": "application/json",
                   "X-Signature": header if header is not None else signature(raw)}
        return await self.call("POST", path, data=raw, headers=headers)


@pytest.fixture
async def api(agent: Agent) -> AsyncIterator[Client]:
    """The agent's API with the token; the test module provides the `agent` fixture."""
    async with aiohttp.ClientSession(f"http://127.0.0.1:{agent.http_port}") as session:
        yield Client(session)
