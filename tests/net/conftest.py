"""Fixtures shared by the network tests: FastAGI servers, the store and the embedded CRM
(on SQLite and on PostgreSQL, from `store_url`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest

from agent.crm.embedded import EmbeddedCrm
from agent.pbx.agi import AgiRequest, AgiServer, Script
from agent.store import Store, open_store

Serve = Callable[..., Awaitable[AgiServer]]
DEFAULT = {"CRM_ROUTE_TYPE": "queue", "CRM_ROUTE_TARGET": "default", "CRM_RULE": "default"}


def default_route(request: AgiRequest, reason: str) -> Mapping[str, str]:
    return DEFAULT


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start `AgiServer`s on free ports (fallback: `DEFAULT`); stopped after the test."""
    servers: list[AgiServer] = []

    async def start(scripts: Mapping[str, Script], **options: Any) -> AgiServer:
        options.setdefault("fallback", default_route)
        server = AgiServer(scripts, port=0, **options)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop(grace_s=1.0)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    store = await open_store(store_url)
    yield store
    await store.close()


@pytest.fixture
def crm(store: Store) -> EmbeddedCrm:
    return EmbeddedCrm(store.db)
