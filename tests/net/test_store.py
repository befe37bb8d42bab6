"""The agent's store and the embedded CRM's bulk import: the same behaviour on SQLite and
PostgreSQL. What every CRM backend does is in `test_crm_contract.py`."""

from __future__ import annotations

from datetime import UTC, datetime

from agent.core.model import CallRecord, Contact, Employee, Organization, Role
from agent.crm.embedded import ContactRow, EmbeddedCrm
from agent.store import Store, open_database, open_store
from agent.store.schema import MIGRATIONS, migrate


async def test_migrations_are_versioned_and_idempotent(store: Store) -> None:
    assert await store.migrate() == len(MIGRATIONS)
    rows = await store.db.fetch("SELECT version FROM schema_version ORDER BY version")
    assert [r[0] for r in rows] == list(range(1, len(MIGRATIONS) + 1))


async def test_bulk_upsert_is_idempotent_on_its_key(crm: EmbeddedCrm) -> None:
    batch = [ContactRow.of("k1", Contact(first_name="One", phones=["+33611111111"]), "ACME"),
             ContactRow.of("k2", Contact(first_name="Two", phones=["+33622222222"]))]
    assert await crm.upsert_contacts(batch) == (2, 0)
    first = (await crm.find_contacts(phone="+33611111111"))[0]
    again = [ContactRow.of("k1", Contact(first_name="Uno", phones=["+33633333333"]), "ACME")]
    assert await crm.upsert_contacts(again) == (0, 1)
    (uno,) = await crm.find_contacts(phone="+33633333333")
    assert (uno.first_name, uno.id, uno.created_at) == ("Uno", first.id, first.created_at)
    assert await crm.find_contacts(phone="+33611111111") == []
    assert len(await crm.select(Contact)) == 2
    found = await crm.find_caller("+33633333333")
    assert [o.name for o in found.organizations.values()] == ["ACME"]
    assert len(await crm.select(Organization)) == 1


async def test_calls_are_keyed_by_call_id(store: Store) -> None:
    call = CallRecord(call_id="1.1", caller="+33612345678",
                      started_at=datetime(2026, 12, 1, 9, tzinfo=UTC))
    assert await store.save_call(call)
    assert not await store.save_call(call.model_copy(update={"answered_by": "201"}))
    saved = await store.get_call("1.1")
    assert saved is not None and saved.answered_by == "201"
    assert await store.last_agent("+33612345678") == "201"
    assert len(await store.list_calls()) == 1


async def test_outbox_claims_once_and_reclaims_after_lease(store: Store) -> None:
    assert await store.enqueue("call:1", "journal", {"n": 1})
    assert not await store.enqueue("call:1", "journal", {"n": 2})
    first = await store.claim(10, lease_s=60)
    assert [(i.key, i.payload, i.attempts) for i in first] == [("call:1", {"n": 1}, 1)]
    assert await store.claim(10) == []
    await store.db.execute("UPDATE outbox SET next_at = 0")
    again = await store.claim(10)
    assert [i.attempts for i in again] == [2]
    await store.retry(again[0].id, delay_s=0, error="crm down", dead=False)
    third = await store.claim(10)
    await store.complete(third[0].id)
    assert await store.outbox_stats() == {"done": 1}


async def test_employees_upsert(store: Store) -> None:
    await store.upsert_employee(Employee(extension="201", name="Alice"))
    await store.upsert_employee(Employee(extension="201", name="Alice B", role=Role.SENIOR))
    assert await store.list_employees() == [Employee(extension="201", name="Alice B",
                                                     role=Role.SENIOR)]


async def test_decision_log_keeps_the_verdicts_of_its_own_rule_set(store: Store) -> None:
    before, after = ("spam", "gold", "sales"), ("gold", "night")
    row = ("agi", "+336****678")
    await store.log_decisions([(1.0, *row, "gold", "queue:vip", 0.2, 0.1, None, "k1", 2),
                               (2.0, *row, "default", "queue:general", 0.3, 0.1, None, "k1", 3)],
                              {"k1": before}, keep=10)
    # the rules were reloaded with other names: older decisions still show their own
    await store.log_decisions([(3.0, *row, "night", "number:+331", 0.2, 0.1, "crm-timeout",
                                "k2", 2)], {"k2": after, "k1": before}, keep=10)
    newest, default, gold = await store.recent_decisions()
    assert newest["trace"] == [["gold", False], ["night", True]]
    assert newest["error"] == "crm-timeout" and newest["destination"] == "number:+331"
    assert default["trace"] == [["spam", False], ["gold", False], ["sales", False]]
    assert gold["trace"] == [["spam", False], ["gold", True]]
    assert (gold["at"], gold["via"], gold["caller"], gold["took_ms"]) == (1.0, *row, 0.2)
    await store.log_decisions([(4.0, *row, "gold", "queue:vip", 0.2, 0.1, None, "k2", 1)],
                              {"k2": after}, keep=2)  # trimmed to the last two
    assert [d["at"] for d in await store.recent_decisions()] == [4.0, 3.0]


async def test_decision_log_reads_as_rows_in_sql(store: Store) -> None:
    """Batches are one row each, but an admin reads decisions with plain SQL."""
    await store.log_decisions([(float(at), "agi", "+336****678", "gold", "queue:vip", 0.5, 0.25,
                                None, "k1", 2) for at in range(1, 4)], {"k1": ("a", "gold")},
                              keep=10)
    await store.log_decisions([(9.5, "crm", None, "default", "queue:general", 1.5, 0.0,
                                "crm-timeout", "k1", 2)], {}, keep=10)
    rows = await store.db.fetch("SELECT at, via, caller, rule, took_ms, error, tried"
                                " FROM decisions WHERE at > 2 ORDER BY at")
    assert [tuple(r) for r in rows] == [(3.0, "agi", "+336****678", "gold", 0.5, None, 2),
                                        (9.5, "crm", None, "default", 1.5, "crm-timeout", 2)]
    assert await store.recent_decisions(limit=2) == [
        {"at": 9.5, "via": "crm", "caller": None, "rule": "default",
         "destination": "queue:general", "took_ms": 1.5, "lookup_ms": 0.0,
         "error": "crm-timeout", "trace": [["a", False], ["gold", False]]},
        {"at": 3.0, "via": "agi", "caller": "+336****678", "rule": "gold",
         "destination": "queue:vip", "took_ms": 0.5, "lookup_ms": 0.25, "error": None,
         "trace": [["a", False], ["gold", True]]}]


async def test_decisions_logged_before_the_batch_layout_are_kept(store_url: str) -> None:
    db = open_database(store_url)
    try:
        await migrate(db, upto=2)  # the layout of one row per decision
        async with db.transaction() as tx:
            await tx.executemany(
                "INSERT INTO decisions (at, via, caller, rule, destination, took_ms, lookup_ms,"
                " error, ruleset, tried) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(float(at), "agi", None, "gold", "queue:vip", 0.5, 0.1, None, "k1", 1)
                 for at in (1, 2, 3)])
            await tx.execute("INSERT INTO rulesets (key, names, first_used) VALUES (?, ?, ?)",
                             ("k1", '["gold"]', 1.0))
    finally:
        await db.close()
    store = await open_store(store_url)
    try:
        assert [d["at"] for d in await store.recent_decisions()] == [3.0, 2.0, 1.0]
        await store.log_decisions([(4.0, "agi", None, "gold", "queue:vip", 0.5, 0.1, None,
                                    "k1", 1)], {}, keep=1)  # the old batch is trimmed whole
        assert [d["at"] for d in await store.recent_decisions()] == [4.0]
    finally:
        await store.close()
