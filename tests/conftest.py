"""Shared fixtures: store URLs for both engines, a running agent on loopback."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.app import Agent
from agent.config import Config, load

pytest_plugins = ["tests.net.leadkit"]  # its `api` fixture, for modules that define `agent`
FIXTURES = Path(__file__).parent / "fixtures"
TOKEN = "test-token"
PG_ENV = "CRM_AGENT_TEST_PG"


def _pg_reachable(url: str) -> str | None:
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(url, timeout=3)
        await conn.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"PostgreSQL at {url} is not reachable: {exc}"
    return None


@pytest.fixture(scope="session")
def pg_base_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} is not set: no PostgreSQL server to test against")
    problem = _pg_reachable(url)
    if problem:
        pytest.skip(problem)
    return url


@pytest.fixture
def pg_url(pg_base_url: str) -> Iterator[str]:
    """A PostgreSQL URL on a fresh schema, dropped after the test."""
    import asyncpg

    schema = f"t_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(pg_base_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in pg_base_url else "?"
    yield f"{pg_base_url}{sep}search_path={schema}"
    asyncio.run(run(f"DROP SCHEMA {schema} CASCADE"))


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("pg_url"))


def agent_config(tmp_path: Path, **env: str) -> Config:
    """A config for tests: loopback, port 0, tmp store, the repo's sample rules."""
    base = {
        "CRM_AGENT_STORE_URL": f"sqlite:///{tmp_path / 'agent.db'}",
        "CRM_AGENT_TOKEN": TOKEN,
        "CRM_AGENT_HTTP__PORT": "0",
        "CRM_AGENT_AGI__PORT": "0",
        "CRM_AGENT_RULES__DIR": str(Path(__file__).parent.parent / "rules"),
        "CRM_AGENT_RULES__WATCH": "false",
        "CRM_AGENT_RECORDINGS__DIR": str(tmp_path / "recordings"),
    }
    base.update(env)
    return load(None, environ=base)


AgentFactory = Callable[..., Awaitable[Agent]]


@pytest.fixture
async def start_agent(tmp_path: Path) -> AsyncIterator[AgentFactory]:
    """Start real agents (HTTP + FastAGI on loopback); all are stopped after the test."""
    started: list[Agent] = []

    async def factory(**env: Any) -> Agent:
        agent = Agent(agent_config(tmp_path, **env))
        await agent.start()
        started.append(agent)
        return agent

    yield factory
    for agent in reversed(started):
        await agent.stop()


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
