"""The embedded CRM's REST API and the operational endpoints, over a real HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from agent.app import Agent
from tests.conftest import AgentFactory, auth


@pytest.fixture
async def agent(start_agent: AgentFactory) -> Agent:
    return await start_agent(CRM_AGENT_HTTP__MAX_BODY_BYTES="2048")


@pytest.fixture
async def http(agent: Agent) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{agent.http_port}") as session:
        yield session


async def test_api_requires_a_bearer_token(http: aiohttp.ClientSession) -> None:
    async with http.get("/api/contacts") as resp:
        assert resp.status == 401
        assert (await resp.json())["error"] == "unauthorized"
    async with http.get("/api/contacts", headers=auth("wrong")) as resp:
        assert resp.status == 403
        assert await resp.json() == {"error": "forbidden", "detail": "invalid token"}


async def test_what_no_route_serves_is_answered_in_json(agent: Agent,
                                                       http: aiohttp.ClientSession) -> None:
    async with http.get("/api/nothing-here", headers=auth()) as resp:
        assert resp.status == 404
        assert await resp.json() == {"error": "not-found", "detail": "no such path"}
    async with http.delete("/crm") as resp:
        assert (resp.status, resp.headers["Allow"]) == (405, "GET,HEAD")
        assert await resp.json() == {"error": "method-not-allowed",
                                     "detail": "allowed here: GET, HEAD"}
    # every feature's routes map their errors to JSON (added with `add_routes`)
    unguarded = [route.resource.canonical for route in agent.app.router.routes()
                 if route.resource is not None and route.handler.__name__ != "no_route"
                 and not hasattr(route.handler, "__wrapped__")]
    assert unguarded == []


async def test_contact_found_by_any_phone_variant(http: aiohttp.ClientSession) -> None:
    body = {"first_name": "Jean", "last_name": "Dupont", "phones": ["06 12 34 56 78"]}
    async with http.post("/api/contacts", json=body, headers=auth()) as resp:
        assert resp.status == 201
        created = await resp.json()
    assert created["phones"] == ["+33612345678"]
    for form in ("0033612345678", "+33 6 12 34 56 78", "0612345678", "33612345678"):
        async with http.get("/api/contacts", params={"phone": form}, headers=auth()) as resp:
            assert [c["id"] for c in await resp.json()] == [created["id"]], form
    async with http.get("/api/contacts", params={"phone": "0699999999"},
                        headers=auth()) as resp:
        assert await resp.json() == []


async def test_bad_input_gets_a_clear_error(http: aiohttp.ClientSession) -> None:
    async with http.post("/api/contacts", json={"phones": ["12"]}, headers=auth()) as resp:
        assert resp.status == 422
        assert "'12' is not a valid phone number" in (await resp.json())["detail"]
    async with http.post("/api/contacts", json={"favourite": "x"}, headers=auth()) as resp:
        assert resp.status == 422
        assert (await resp.json())["detail"] == "favourite: unknown key"
    async with http.post("/api/contacts", data=b"{not json", headers=auth()) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "bad-json"
    async with http.post("/api/contacts", data=b"x" * 5000, headers=auth()) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"] == "too-large"
    async with http.get("/api/leads/4242", headers=auth()) as resp:
        assert resp.status == 404
        assert await resp.json() == {"error": "not-found", "detail": "lead 4242 not found"}
    async with http.get("/api/tasks", params={"colour": "red"}, headers=auth()) as resp:
        assert resp.status == 400


async def test_records_update_and_tasks_by_assignee(http: aiohttp.ClientSession) -> None:
    async with http.post("/api/organizations", json={"name": "ACME"}, headers=auth()) as resp:
        org = await resp.json()
    async with http.post("/api/leads", json={"title": "demo", "organization_id": org["id"]},
                         headers=auth()) as resp:
        lead = await resp.json()
    async with http.patch(f"/api/leads/{lead['id']}", json={"owner": "201"},
                          headers=auth()) as resp:
        assert (await resp.json())["owner"] == "201"
    for title, assignee, status in [("a", "201", "open"), ("b", "201", "done"),
                                    ("c", "202", "open")]:
        task = {"title": title, "assignee": assignee, "status": status,
                "lead_id": lead["id"]}
        async with http.post("/api/tasks", json=task, headers=auth()) as resp:
            assert resp.status == 201
    async with http.get("/api/tasks", params={"assignee": "201", "status": "open"},
                        headers=auth()) as resp:
        assert [t["title"] for t in await resp.json()] == ["a"]


async def test_employees_are_upserted(http: aiohttp.ClientSession) -> None:
    employee = {"extension": "203", "name": "Carol", "role": "senior"}
    async with http.post("/api/employees", json=employee, headers=auth()) as resp:
        assert resp.status == 201
    async with http.get("/api/employees", headers=auth()) as resp:
        assert employee in [{k: e[k] for k in employee} for e in await resp.json()]


async def test_health_ready_and_metrics(http: aiohttp.ClientSession) -> None:
    async with http.get("/healthz") as resp:
        assert await resp.json() == {"status": "ok"}
    async with http.get("/readyz") as resp:
        body = await resp.json()
        assert resp.status == 200 and body["ready"] is True
    async with http.get("/metrics") as resp:
        assert "crm_agent_calls_routed" in await resp.text()


async def test_openapi_documents_every_route(agent: Agent,
                                             http: aiohttp.ClientSession) -> None:
    async with http.get("/openapi.json") as resp:
        doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    assert agent.app is not None
    resources = {r.resource.canonical for r in agent.app.router.routes() if r.resource}
    documented = set(doc["paths"])
    assert {"/crm", "/route", "/api/contacts", "/api/contacts/{id}", "/healthz"} <= documented
    assert len(documented) == len(resources)
    post = doc["paths"]["/api/contacts"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"]
    assert doc["paths"]["/api/contacts"]["get"]["security"] == [{"bearer": []}]
    assert doc["paths"]["/healthz"]["get"]["security"] == []


async def test_admin_page_is_served_without_data(http: aiohttp.ClientSession) -> None:
    async with http.get("/admin") as resp:
        page = await resp.text()
        assert resp.status == 200 and resp.content_type == "text/html"
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert "Rule tester" in page and "/admin/rules/test" in page
    assert "Bearer" in page  # every data call carries the token the admin pasted
