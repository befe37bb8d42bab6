"""Wiring of the call journal: `journal.yaml`, the outbox worker, `/events/call`,
`/api/associate`, `/recordings/...` and the AMI listener (see `agent.app.FEATURES`)."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from agent.calljournal import JOURNAL_KIND, CallJournal
from agent.config import Config, ConfigError
from agent.http import events
from agent.http.ops import READY_CHECKS
from agent.journal import JournalError, JournalSettings, load_settings
from agent.model import CallRecord
from agent.outbox import OutboxWorker
from agent.recordings import RecordingLinks, derive_secret
from agent.rules.reload import Reloadable
from agent.store import Store

if TYPE_CHECKING:
    from agent.app import Agent

log = logging.getLogger("agent.journal")
ACCEPT_RETRIES = 5


def settings_file(path: Path, region: str) -> Reloadable[JournalSettings]:
    """`journal.yaml`, reloaded with the rules directory; missing: defaults, no employees."""
    return Reloadable(path, lambda p: load_settings(p, region=region), missing=JournalSettings,
                      errors=(JournalError,))


async def sync_employees(store: Store, settings: JournalSettings) -> None:
    """The file's employees go to the store too (API, routing, admin page)."""
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


def build_worker(agent: Agent, journal: CallJournal,
                 source: Reloadable[JournalSettings]) -> OutboxWorker:
    store, outbox = agent.store, agent.config.outbox
    assert store is not None

    agent_id = outbox.agent_id or f"{socket.gethostname()}:{agent.config.http.port}"
    synced = [source.version]

    async def before_batch() -> None:
        if source.version != synced[0]:  # journal.yaml reloaded since the last batch
            synced[0] = source.version
            await sync_employees(store, source.value)
            check_lists(source.value, agent.rules.rules.lists)

    return OutboxWorker(store, {JOURNAL_KIND: journal}, batch=outbox.batch,
                        lease_s=outbox.lease_s, backoff_base_s=outbox.backoff_base_s,
                        backoff_max_s=outbox.backoff_max_s, max_attempts=outbox.max_attempts,
                        poll_s=outbox.poll_s, before_batch=before_batch, metrics=agent.metrics,
                        agent_id=agent_id)


async def prepare(agent: Agent) -> None:
    """Load the settings, start the outbox worker, add the routes and readiness check."""
    config, store, app = agent.config, agent.store, agent.app
    assert store is not None and agent.records is not None and app is not None
    source = agent.rules_files.add(settings_file(agent.rules_files.directory / "journal.yaml",
                                                 config.region))
    if not source.path.exists():
        log.warning("%s not found: journal defaults, no employees", source.path)
    try:
        source.load_now()
    except JournalError as exc:
        raise ConfigError(f"cannot start with a broken journal file: {exc}") from None
    await sync_employees(store, source.value)
    check_lists(source.value, agent.rules.rules.lists)
    links = recording_links(config, agent.token)
    journal = CallJournal(store, agent.records, source.current, links=links.url,
                          lists=lambda: agent.rules.rules.lists, metrics=agent.metrics)
    worker = build_worker(agent, journal, source)
    journal.on_queued = worker.wake
    app[events.JOURNAL], app[events.OUTBOX], app[events.RECORDINGS] = journal, worker, links
    events.setup(app)
    agent.is_blocked = lambda number: source.value.blocked(number)

    async def ready() -> tuple[bool, object]:
        ok, detail = await worker.check()
        return ok, {"settings": str(source.path), "error": source.error,
                    "deliver": config.outbox.deliver, "outbox": detail}

    app[READY_CHECKS]["journal"] = ready
    if config.outbox.deliver:
        await worker.start()
        agent.stack.push_async_callback(worker.stop)


async def start(agent: Agent) -> None:
    """Start the AMI listener (when enabled): finished calls go to the journal."""
    config, app = agent.config, agent.app
    if not config.ami.enabled or app is None:
        return
    from agent.ami import AmiListener
    from agent.calltrack import CallTracker

    journal = app[events.JOURNAL]
    ami = config.ami
    tracker = CallTracker(region=config.region, internal=re.compile(ami.internal_extension),
                          grace_s=ami.grace_s, max_idle_s=ami.max_idle_s)
    listener = AmiListener(tracker, accept_with_retries(journal), host=ami.host, port=ami.port,
                           username=ami.username, secret=ami.secret.get_secret_value(),
                           reconnect_max_s=ami.reconnect_max_s)
    await listener.start()
    agent.stack.push_async_callback(listener.stop)
    agent.queue_state = listener.queue_state

    async def ready() -> tuple[bool, object]:
        return True, {"connected": listener.ready, "error": listener.last_error}

    app[READY_CHECKS]["ami"] = ready


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
