"""AMI adapter: a panoramisk connection feeding `CallTracker`, call records out to a callback.

panoramisk quirks this module works around (panoramisk 1.4, read from its source):

* `Manager.connect()` and `connection_lost()` reschedule themselves with `loop.call_later` at a
  fixed delay: tasks and timers nobody owns, no backoff, and a reconnect can fire after
  `close()`. We open the socket ourselves, hand it to `Manager.connection_made()`, and run
  reconnection (capped exponential backoff) in our own task; `_Manager` drops the self-rescheduling.
* A refused `Login` only sets `manager.authenticated = False`: no error, no callback. We await
  the Login future and raise `AmiLoginError`. Its built-in pinger never checks the answer, so
  we ping ourselves and reconnect when Asterisk stops answering (a half-open TCP connection).
* Messages are case-insensitive dicts with a spurious `content` key and list values for
  repeated headers; we flatten them into plain `str -> str` dicts for the tracker.
* A `Response:` without an ActionID of ours (none, or another client's, as in the recorded
  traces) matches no pending action and, having no `Event` header, is dropped silently.
  Events that carry one of our ActionIDs go to that action's future, not to the event
  callbacks: that is how the `QueueStatus` and `CoreShowChannels` lists arrive.
* panoramisk logs every message at DEBUG (phone numbers) and failed actions with all their
  fields (a Login's secret), so it gets a detached, disabled logger. The protocol logs the
  banner (`protocol version: ...`) with its own module logger, before the Manager hands it
  ours, so `_Protocol` gets the disabled one from the start. Its `FullyBooted` handler would
  spawn an unowned task per connection; `_Manager` makes it a no-op.

Queue counters (`queue_state()`) are seeded with `QueueStatus` after each login and then
follow `QueueMember*` / `QueueCaller*` events; a member is available when not paused and its
device state is unknown (0) or not in use (1), as app_queue counts it.

When a session ends, the calls still open were up until then (`CallTracker.lost`). After the
next login, if calls are still open, `CoreShowChannels` (else `Status`) lists the channels
Asterisk has; the calls with none of them (Asterisk crashed or restarted, or they hung up
while we were away) are closed at once (`CallTracker.reconcile`), not after `max_idle_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from panoramisk.ami_protocol import AMIProtocol  # type: ignore[import-untyped]
from panoramisk.manager import Manager  # type: ignore[import-untyped]
from panoramisk.message import Message  # type: ignore[import-untyped]

from agent.core.model import CallRecord
from agent.core.phones import mask
from agent.core.queues import QueueBoard
from agent.journal.calltrack import CallTracker

log = logging.getLogger(__name__)

OnCall = Callable[[CallRecord], Awaitable[None]]
CHANNEL_LISTS = (("CoreShowChannels", "CoreShowChannel"), ("Status", "Status"))
"""Actions that list the live channels, and the event of each channel, tried in order:
Asterisk runs CoreShowChannels for `write = system` or `reporting`, Status for those or
`call`."""


class AmiLoginError(Exception):
    """Asterisk refused our credentials (manager.conf user, secret, `permit=`)."""


class _Protocol(AMIProtocol):  # type: ignore[misc]
    """panoramisk's protocol, plus a future resolved once the socket is really closed."""

    def __init__(self, closed: asyncio.Future[None]) -> None:
        super().__init__()
        self._closed_future = closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.log = _quiet_logger()  # else the banner is logged before the Manager takes over

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed_future.done():
            self._closed_future.set_result(None)
        if self.factory is None:  # lost before the Manager took the connection over
            self.closed = True
            return
        super().connection_lost(exc)


class _Manager(Manager):  # type: ignore[misc]
    """A Manager that leaves reconnecting and pinging to `AmiListener`."""

    pinger: asyncio.TimerHandle | None

    def connection_lost(self, exc: Exception | None) -> None:
        self._connected = False
        if self.pinger:
            self.pinger.cancel()
            self.pinger = None

    def ping(self) -> None:
        pass

    def send_awaiting_actions(self, *_: object) -> None:
        pass  # we queue no actions across reconnects; avoids an unowned task per FullyBooted


def _quiet_logger() -> logging.Logger:
    """A logger outside the hierarchy that drops everything (see the module docstring)."""
    quiet = logging.Logger("agent.ami.panoramisk")
    quiet.disabled = True
    return quiet


def headers(message: Mapping[str, Any]) -> dict[str, str]:
    """A panoramisk Message as plain headers (repeated headers keep their last value)."""
    flat = {}
    for key, value in message.items():
        if key != "content":
            flat[key] = str(value[-1] if isinstance(value, list) and value else value)
    return flat


class AmiListener:
    """Keeps one AMI session up, journals its events, hands finished calls to `on_call`."""

    def __init__(self, tracker: CallTracker, on_call: OnCall, *, host: str = "127.0.0.1",
                 port: int = 5038, username: str = "agent", secret: str = "",
                 reconnect_min_s: float = 0.5, reconnect_max_s: float = 30.0,
                 ping_interval_s: float = 10.0, timeout_s: float = 5.0,
                 emit_interval_s: float = 0.5, clock: Callable[[], float] = time.time,
                 queues: QueueBoard | None = None) -> None:
        self._tracker, self._on_call = tracker, on_call
        self._host, self._port, self._username, self._secret = host, port, username, secret
        self._reconnect_min_s, self._reconnect_max_s = reconnect_min_s, reconnect_max_s
        self._ping_interval_s, self._timeout_s = ping_interval_s, timeout_s
        self._emit_interval_s, self._clock = emit_interval_s, clock
        self._queues = QueueBoard() if queues is None else queues
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = self._logged_in = False
        self._waiters: list[asyncio.Future[None]] = []
        self._pending: deque[CallRecord] = deque()  # due, not yet handed to on_call
        self.last_error: str | None = None

    @property
    def ready(self) -> bool:
        """Connected and logged in."""
        return self._ready

    def queue_state(self) -> dict[str, dict[str, int]]:
        return self._queues.snapshot()

    async def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [asyncio.create_task(self._run(), name="ami-session"),
                       asyncio.create_task(self._emit_loop(), name="ami-emit")]

    async def stop(self) -> None:
        """Close the session, then journal every call still open (they may be partial).

        A record whose callback was interrupted by the stop is handed over again: the
        journal is idempotent per call id.
        """
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, Exception):
                log.error("AMI task failed: %r", result)
        self._fail_waiters(ConnectionError("AMI listener stopped"))
        await self._deliver(self._tracker.flush())

    async def wait_ready(self) -> None:
        """Wait for a logged-in session; raises `AmiLoginError` if Asterisk refuses the login."""
        if self._ready:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            self._waiters.remove(waiter)

    # -- session ---------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self._reconnect_min_s
        while True:
            self._logged_in = False
            level, problem = await self._attempt()
            if self._logged_in:  # that session worked: start the backoff over
                delay = self._reconnect_min_s
            log.log(level, "%s; reconnecting in %.3g s", problem, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._reconnect_max_s)

    async def _attempt(self) -> tuple[int, str]:
        """One session, until it fails; the log level and text of the failure."""
        try:
            await self._session()
        except AmiLoginError as exc:
            self.last_error = str(exc)
            self._fail_waiters(exc)
            return logging.ERROR, str(exc)
        except (OSError, TimeoutError) as exc:  # ConnectionError is an OSError
            self.last_error = f"AMI {self._host}:{self._port}: {exc or type(exc).__name__}"
        return logging.WARNING, self.last_error or "AMI session ended"

    async def _session(self) -> None:
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[None] = loop.create_future()
        manager = _Manager(host=self._host, port=self._port, username=self._username,
                           secret=self._secret, events="on", loop=loop, log=_quiet_logger())
        manager.register_event("*", self._on_event)
        transport, protocol = await asyncio.wait_for(
            loop.create_connection(lambda: _Protocol(closed), self._host, self._port),
            self._timeout_s)
        connected: asyncio.Future[tuple[Any, Any]] = loop.create_future()
        connected.set_result((transport, protocol))
        manager.connection_made(connected)  # sends Login
        try:
            await self._login(manager, closed)
            await self._load_queues(manager, closed)
            await self._reconcile(manager, closed)
            self._set_ready()
            await self._keepalive(manager, closed)
        finally:
            self._ready = False
            if self._logged_in:  # events stop here: the open calls were up until now
                self._tracker.lost(self._clock())
            manager.close()
            await asyncio.wait({closed}, timeout=self._timeout_s)

    async def _login(self, manager: Manager, closed: asyncio.Future[None]) -> None:
        answer = await self._answer(manager.authenticated_future, closed, "Login")
        if not answer.success:
            reason = answer.get("Message") or answer.get("Response") or "no reason"
            raise AmiLoginError(f"AMI login as {self._username!r} on {self._host}:{self._port} "
                                f"refused: {reason}")
        self._logged_in = True
        log.info("AMI logged in to %s:%d as %r", self._host, self._port, self._username)

    async def _load_queues(self, manager: Manager, closed: asyncio.Future[None]) -> None:
        try:
            answer = await self._answer(manager.send_action({"Action": "QueueStatus"}), closed,
                                        "QueueStatus")
        except TimeoutError:
            log.warning("AMI QueueStatus unanswered; queue counters start empty")
            return
        if isinstance(answer, list):
            self._queues.reset([headers(m) for m in answer])

    async def _reconcile(self, manager: Manager, closed: asyncio.Future[None]) -> None:
        """Close the calls left open by the last session whose channels are gone."""
        if not self._tracker.open_calls:
            return
        listed_at, refusals = self._clock(), []
        for action, event in CHANNEL_LISTS:
            try:
                answer = await self._answer(manager.send_action({"Action": action}), closed,
                                            action)
            except TimeoutError as exc:
                refusals.append(str(exc))
                break
            if isinstance(answer, list):
                channels = [headers(m) for m in answer if m.get("Event") == event]
                gone = self._tracker.reconcile(channels, listed_at)
                log.info("AMI %s: %d channels up; %d calls left open by the last session "
                         "closed", action, len(channels), gone)
                return
            refusals.append(f"{action}: {answer.get('Message') or 'refused'}")
        log.warning("AMI cannot list the channels (%s): the calls left open by the last "
                    "session end after ami.max_idle_s; give the AMI user write = reporting "
                    "in manager.conf", "; ".join(refusals))

    async def _keepalive(self, manager: Manager, closed: asyncio.Future[None]) -> None:
        while True:
            done, _ = await asyncio.wait({closed}, timeout=self._ping_interval_s)
            if done:
                raise ConnectionError("connection closed by the server")
            await self._answer(manager.send_action({"Action": "Ping"}), closed, "Ping")

    async def _answer(self, future: asyncio.Future[Any], closed: asyncio.Future[None],
                      action: str) -> Any:
        done, _ = await asyncio.wait({future, closed}, timeout=self._timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        if future in done:
            return future.result()
        if closed in done:
            raise ConnectionError(f"connection closed while waiting for {action}")
        raise TimeoutError(f"no answer to {action} within {self._timeout_s:g} s")

    def _set_ready(self) -> None:
        self._ready, self.last_error = True, None
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _fail_waiters(self, exc: Exception) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(exc)

    # -- events in, records out -----------------------------------------------------------

    def _on_event(self, manager: Manager, message: Message) -> None:
        # runs inside panoramisk's data_received: an exception here would close the connection
        try:
            event = headers(message)
            self._queues.feed(event)
        except Exception:
            log.exception("AMI event ignored")
            return
        self._tracker.feed(event, self._clock())

    async def _emit_loop(self) -> None:
        while True:
            await asyncio.sleep(self._emit_interval_s)
            await self._deliver(self._tracker.due(self._clock()))

    async def _deliver(self, records: list[CallRecord]) -> None:
        self._pending.extend(records)
        while self._pending:
            record = self._pending[0]
            log.info("call %s %s %s caller %s", record.call_id, record.direction,
                     record.outcome, mask(record.caller or record.caller_raw))
            try:
                await self._on_call(record)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # we are being stopped: the record stays pending
                log.error("call %s: journal callback was cancelled", record.call_id)
            except Exception:
                log.exception("call %s: journal callback failed", record.call_id)
            self._pending.popleft()
