"""Wiring of the call journal: the outbox worker, `/events/call`, `/api/associate`,
`/recordings/...` and the AMI listener."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Mapping

from agent.config import Config
from agent.core.model import CallRecord
from agent.journal import JournalSettings
from agent.journal import http as events
from agent.journal.outbox import OutboxWorker
from agent.journal.recordings import RecordingLinks, derive_secret
from agent.journal.service import JOURNAL_KIND, CallJournal
from agent.ops.http import READY_CHECKS
from agent.services import Services
from agent.store import Store

log = logging.getLogger("agent.journal")
ACCEPT_RETRIES = 5


async def sync_employees(store: Store, settings: JournalSettings) -> None:
    """The file's employees go to the store too (API, journal, admin page)."""
    for employee in settings.employees:
        await store.upsert_employee(employee)
    if settings.senior() is None:
        log.warning("journal: no employee with role senior or top: missed-call and "
                    "integration tasks will not be created")


def check_lists(settings: JournalSettings, lists: Mapping[str, object]) -> None:
    """A `blocklist_lists` name routing.yaml does not define is a typo: say so."""
    missing = [name for name in settings.blocklist_lists if name not in lists]
    if missing and "blocklist_lists" in settings.model_fields_set:
        log.warning("journal: blocklist_lists names %s, which routing.yaml does not define: "
                    "their callers are journaled", ", ".join(map(repr, missing)))


def recording_links(config: Config, token: str) -> RecordingLinks:
    secret = config.recordings.secret
    key = secret.get_secret_value().encode() if secret is not None else derive_secret(token)
    return RecordingLinks(config.path(config.recordings.dir), key, config.http.public_url,
                          config.recordings.link_ttl_s)


def build_worker(services: Services, journal: CallJournal) -> OutboxWorker:
    store, outbox, source = services.store, services.config.outbox, services.journal_settings
    agent_id = outbox.agent_id or f"{socket.gethostname()}:{services.config.http.port}"
    synced = [source.version]

    async def before_batch() -> None:
        if source.version != synced[0]:  # journal.yaml reloaded since the last batch
            synced[0] = source.version
            await sync_employees(store, source.value)
            check_lists(source.value, services.rules.value.lists)

    return OutboxWorker(store, {JOURNAL_KIND: journal}, batch=outbox.batch,
                        lease_s=outbox.lease_s, backoff_base_s=outbox.backoff_base_s,
                        backoff_max_s=outbox.backoff_max_s, max_attempts=outbox.max_attempts,
                        poll_s=outbox.poll_s, before_batch=before_batch,
                        metrics=services.metrics, agent_id=agent_id)


async def wire(services: Services) -> CallJournal:
    """The employees synced, the outbox worker started, the routes and readiness check;
    returns the journal (what the AMI listener hands its calls to)."""
    config, store, app, source = (services.config, services.store, services.app,
                                  services.journal_settings)
    if not source.path.exists():
        log.warning("%s not found: journal defaults, no employees", source.path)
    await sync_employees(store, source.value)
    check_lists(source.value, services.rules.value.lists)
    links = recording_links(config, services.token)
    journal = CallJournal(store, services.records, source.current, links=links.url,
                          lists=lambda: services.rules.value.lists, metrics=services.metrics)
    worker = build_worker(services, journal)
    journal.on_queued = worker.wake
    app[events.JOURNAL], app[events.OUTBOX], app[events.RECORDINGS] = journal, worker, links
    events.setup(app)

    async def ready() -> tuple[bool, object]:
        ok, detail = await worker.check()
        return ok, {"settings": str(source.path), "error": source.error,
                    "deliver": config.outbox.deliver, "outbox": detail}

    app[READY_CHECKS]["journal"] = ready
    if config.outbox.deliver:
        await worker.start()
        services.stack.push_async_callback(worker.stop)
    return journal


async def listen(services: Services, journal: CallJournal) -> None:
    """Start the AMI listener (when enabled): finished calls go to the journal, queue
    events to the shared queue counters."""
    config = services.config
    if not config.ami.enabled:
        return
    from agent.journal.ami import AmiListener
    from agent.journal.calltrack import CallTracker

    ami = config.ami
    tracker = CallTracker(region=config.region, internal=re.compile(ami.internal_extension),
                          grace_s=ami.grace_s, max_idle_s=ami.max_idle_s)
    listener = AmiListener(tracker, accept_with_retries(journal), host=ami.host, port=ami.port,
                           username=ami.username, secret=ami.secret.get_secret_value(),
                           reconnect_max_s=ami.reconnect_max_s, queues=services.queues)
    await listener.start()
    services.stack.push_async_callback(listener.stop)

    async def ready() -> tuple[bool, object]:
        return True, {"connected": listener.ready, "error": listener.last_error}

    services.app[READY_CHECKS]["ami"] = ready


def accept_with_retries(journal: CallJournal) -> Callable[[CallRecord], Awaitable[None]]:
    """AMI calls exist only in memory until accepted: ride out a short store outage."""

    async def on_call(call: CallRecord) -> None:
        for attempt in range(ACCEPT_RETRIES):
            try:
                await journal.accept(call)
                return
            except Exception as exc:
                if attempt == ACCEPT_RETRIES - 1:
                    raise
                log.warning("call %s not accepted yet (%s); retrying", call.call_id, exc)
                await asyncio.sleep(0.2 * 2 ** attempt)

    return on_call
