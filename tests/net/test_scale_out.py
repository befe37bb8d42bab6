"""Two agents sharing one PostgreSQL store keep their caches and rules in step (§10)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import aiohttp

from agent.app import Agent
from tests.conftest import AgentFactory, auth

REPO_RULES = Path(__file__).parents[2] / "rules"
GOLD = """
default: {destination: "queue:general"}
rules:
  - {name: gold, field: contact.status, op: eq, value: OR, destination: "queue:vip"}
"""


async def route(agent: Agent, caller: str) -> dict[str, object]:
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{agent.http_port}/route", params={"callerid": caller}) as resp:
        return dict(await resp.json())


async def test_a_write_on_one_agent_refreshes_the_others_cache(
        start_agent: AgentFactory, pg_url: str, tmp_path: Path) -> None:
    rules = tmp_path / "shared-rules"
    shutil.copytree(REPO_RULES, rules)
    (rules / "routing.yaml").write_text(GOLD)
    env = {"CRM_AGENT_STORE_URL": pg_url, "CRM_AGENT_RULES__DIR": str(rules),
           "CRM_AGENT_ROUTING__NEGATIVE_TTL_S": "3600", "CRM_AGENT_AGI__ENABLED": "false"}
    writer, reader = await start_agent(**env), await start_agent(**env)
    assert (await route(reader, "0612345678"))["rule"] == "default"  # cached as unknown

    contact = {"first_name": "Jean", "phones": ["0612345678"], "fields": {"status": "OR"}}
    async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{writer.http_port}/api/contacts", json=contact,
            headers=auth()) as resp:
        assert resp.status == 201
    for _ in range(100):  # NOTIFY crosses the server asynchronously
        if (await route(reader, "0612345678"))["rule"] == "gold":
            break
        await asyncio.sleep(0.02)
    assert (await route(reader, "0612345678"))["rule"] == "gold"

    (rules / "routing.yaml").write_text(GOLD.replace("queue:general", "queue:everyone"))
    assert reader.services is not None
    reader.services.rules.reloaded.clear()
    async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{writer.http_port}/admin/rules/reload", headers=auth()) as resp:
        assert (await resp.json())["reloaded"] is True
    await asyncio.wait_for(reader.services.rules.reloaded.wait(), 5)
    assert (await route(reader, "0699999999"))["destination"] == {"type": "queue",
                                                                  "target": "everyone"}
