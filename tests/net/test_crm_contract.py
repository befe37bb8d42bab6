"""What every CRM backend does, as the use cases rely on it (`agent.crm.port.Crm`): find a
caller with everything filed under the number, find contacts, read, create and update
records, log a call, and `joined(tx)`. Run against each backend: today the embedded CRM, on
SQLite and on PostgreSQL; a remote backend adds its fake here."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent.core.model import CallRecord, Contact, Deal, Lead, Organization, Task
from agent.crm.port import CallActivity, Crm, NotFound
from agent.store import Store


async def test_a_caller_comes_with_organization_leads_and_deals(crm: Crm) -> None:
    org = await crm.create(Organization(name="ACME"))
    jean = await crm.create(Contact(first_name="Jean", last_name="Dupont",
                                    phones=["+33612345678"], organization_id=org.id))
    await crm.create(Contact(first_name="Other", phones=["+33699999999"]))
    lead = await crm.create(Lead(contact_id=jean.id, owner="201"))
    deal = await crm.create(Deal(organization_id=org.id, owner="202"))
    found = await crm.find_caller("+33612345678")
    assert [c.first_name for c in found.contacts] == ["Jean"]
    assert list(found.organizations) == [org.id]
    assert [x.id for x in found.leads] == [lead.id]
    assert [x.id for x in found.deals] == [deal.id]
    assert not (await crm.find_caller("+33600000000")).known


async def test_created_records_get_an_id_and_times(crm: Crm) -> None:
    contact = await crm.create(Contact(first_name="A", phones=["+33611111111"]))
    assert contact.id is not None and contact.created_at is not None
    assert await crm.get(Contact, contact.id) == contact


async def test_update_merges_custom_fields_and_reindexes_phones(crm: Crm) -> None:
    contact = await crm.create(Contact(first_name="A", phones=["+33611111111"],
                                       fields={"tier": "gold", "zone": "N"}))
    assert contact.id is not None
    updated = await crm.update(Contact, contact.id, {"phones": ["+33622222222"],
                                                     "fields": {"tier": "silver"}})
    assert updated.fields == {"tier": "silver", "zone": "N"}
    assert await crm.find_contacts(phone="+33611111111") == []
    assert [c.id for c in await crm.find_contacts(phone="+33622222222")] == [contact.id]


async def test_find_by_email_is_case_insensitive(crm: Crm) -> None:
    contact = await crm.create(Contact(first_name="B", emails=["Jean@Example.com"]))
    assert [c.id for c in await crm.find_contacts(email="jean@example.COM")] == [contact.id]


async def test_a_missing_record_is_not_found(crm: Crm) -> None:
    with pytest.raises(NotFound, match="lead 999 not found"):
        await crm.get(Lead, 999)
    with pytest.raises(NotFound):
        await crm.update(Lead, 999, {"owner": "201"})


async def test_select_filters_on_indexed_fields_only(crm: Crm) -> None:
    await crm.create(Task(assignee="201", title="call back"))
    await crm.create(Task(assignee="201", title="done", status="done"))
    await crm.create(Task(assignee="202", title="other"))
    open_tasks = await crm.select(Task, {"assignee": "201", "status": "open"})
    assert [t.title for t in open_tasks] == ["call back"]
    with pytest.raises(ValueError, match="cannot filter"):
        await crm.select(Task, {"colour": "red"})


async def test_a_call_on_a_deal_shows_in_the_deal_history(crm: Crm) -> None:
    deal = await crm.create(Deal(owner="202"))
    call = CallRecord(call_id="c1", caller="+33612345678", answered=True, answered_by="201",
                      ended_at=datetime(2026, 12, 1, 9, 2, tzinfo=UTC))
    logged = await crm.log_call(call, CallActivity(summary="inbound, answered",
                                                   deal_id=deal.id))
    (task,) = await crm.select(Task, {"call_id": "c1"})
    assert logged == task.id
    assert (task.assignee, task.status, task.deal_id) == ("201", "done", deal.id)
    assert await crm.log_call(call.model_copy(update={"call_id": "c2"}),
                              CallActivity(summary="no deal")) is None
    assert await crm.select(Task, {"call_id": "c2"}) == []


async def test_the_embedded_crm_commits_and_rolls_back_with_the_agent_transaction(
        crm: Crm, store: Store) -> None:
    """What makes a journal plan and its outbox row one unit (a remote CRM cannot join: its
    `joined` returns itself and its writes are made idempotent instead)."""
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await crm.joined(tx).create(Organization(name="ghost"))
            raise RuntimeError("boom")
    assert await crm.select(Organization) == []
    async with store.transaction() as tx:
        await crm.joined(tx).create(Organization(name="kept"))
        await tx.enqueue("k", "journal", {})
    assert [o.name for o in await crm.select(Organization)] == ["kept"]
