"""A fake Asterisk manager interface on 127.0.0.1:0, enough to drive the real panoramisk.

It sends the banner, answers `Login` (checking the credentials, and hanging up after a
refusal as Asterisk does), `Ping`, `QueueStatus`, and `CoreShowChannels` and `Status` with the
channels in `channels` (in Asterisk 22.10.1's format, main/manager.c), or `Permission denied`
for the actions in `refused`; any other action gets an error. Each action's name goes to
`actions`. Each logged-in connection becomes a `FakeAmiSession` on `sessions`, through which
the test pushes recorded AMI bytes or drops the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

BANNER = b"Asterisk Call Manager/9.0.0\r\n"
EOM = b"\r\n\r\n"


def message(*lines: tuple[str, str]) -> bytes:
    return b"".join(f"{key}: {value}\r\n".encode() for key, value in lines) + b"\r\n"


def parse(block: bytes) -> dict[str, str]:
    fields = {}
    for line in block.decode().split("\r\n"):
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    return fields


class FakeAmiSession:
    """One logged-in client connection."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def push(self, data: bytes, chunk: int = 0) -> None:
        """Send raw AMI bytes, in `chunk`-byte pieces when given (to split messages)."""
        size = chunk or len(data) or 1
        for start in range(0, len(data), size):
            self._writer.write(data[start:start + size])
            await self._writer.drain()

    async def drop(self) -> None:
        """Close the socket, as a crashing or restarting Asterisk would."""
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


class FakeAmi:
    """The server. `async with FakeAmi() as ami:` then connect to `ami.port` (0: any free one)."""

    def __init__(self, *, username: str = "agent", secret: str = "s3cret", port: int = 0,
                 queue_status: tuple[Mapping[str, str], ...] = ()) -> None:
        self.username, self.secret, self._port = username, secret, port
        self.queue_status = queue_status
        self.channels: list[Mapping[str, str]] = []
        """The live channels: `Channel`, `Uniqueid`, `Linkedid` and any other header of
        Asterisk's channel snapshot (the rest is filled in)."""
        self.refused: set[str] = set()
        self.answer_pings = True
        self.sessions: asyncio.Queue[FakeAmiSession] = asyncio.Queue()
        self.actions: asyncio.Queue[str] = asyncio.Queue()
        self.logins: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()
        self.pings: asyncio.Queue[None] = asyncio.Queue()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> FakeAmi:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self._port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            writer.write(BANNER)
            while not writer.is_closing():
                action = parse(await reader.readuntil(EOM))
                writer.write(self._answer(action, writer))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _answer(self, action: dict[str, str], writer: asyncio.StreamWriter) -> bytes:
        name, action_id = action.get("action", "").lower(), action.get("actionid", "")
        self.actions.put_nowait(action.get("action", ""))
        if name == "login":
            return self._login(action, writer)
        if name in {refused.lower() for refused in self.refused}:
            return message(("Response", "Error"), ("ActionID", action_id),
                           ("Message", "Permission denied"))
        if name == "coreshowchannels":
            return self._core_show_channels(action_id)
        if name == "status":
            return self._status(action_id)
        if name == "ping":
            self.pings.put_nowait(None)
            if not self.answer_pings:
                return b""
            return message(("Response", "Success"), ("ActionID", action_id), ("Ping", "Pong"))
        if name == "queuestatus":
            return self._queue_status(action_id)
        return message(("Response", "Error"), ("ActionID", action_id),
                       ("Message", "Invalid/unknown command"))

    def _login(self, action: dict[str, str], writer: asyncio.StreamWriter) -> bytes:
        action_id = action.get("actionid", "")
        ok = (action.get("username"), action.get("secret")) == (self.username, self.secret)
        self.logins.put_nowait((action.get("username", ""), ok))
        if not ok:
            writer.write(message(("Response", "Error"), ("ActionID", action_id),
                                 ("Message", "Authentication failed")))
            writer.close()  # Asterisk ends the session after a refused login
            return b""
        self.sessions.put_nowait(FakeAmiSession(writer))
        return message(("Response", "Success"), ("ActionID", action_id),
                       ("Message", "Authentication accepted"))

    def _queue_status(self, action_id: str) -> bytes:
        items = [message(*sorted(item.items()), ("ActionID", action_id))
                 for item in self.queue_status]
        return (message(("Response", "Success"), ("ActionID", action_id),
                        ("EventList", "start"), ("Message", "Queue status will follow"))
                + b"".join(items)
                + message(("Event", "QueueStatusComplete"), ("ActionID", action_id),
                          ("EventList", "Complete"), ("ListItems", str(len(items)))))

    def _core_show_channels(self, action_id: str) -> bytes:
        """`action_coreshowchannels`: a list ack, a `CoreShowChannel` per channel (no
        Privilege or Timestamp: they are appended to the reply, not sent as events), then
        `CoreShowChannelsComplete`."""
        items = [message(("Event", "CoreShowChannel"), ("ActionID", action_id),
                         *snapshot(channel), ("Application", channel.get("Application", "Dial")),
                         ("ApplicationData", channel.get("ApplicationData", "")),
                         ("Duration", channel.get("Duration", "00:00:42")),
                         ("BridgeId", channel.get("BridgeId", "")))
                 for channel in self.channels]
        return (message(("Response", "Success"), ("ActionID", action_id),
                        ("EventList", "start"), ("Message", "Channels will follow"))
                + b"".join(items)
                + message(("Event", "CoreShowChannelsComplete"), ("ActionID", action_id),
                          ("EventList", "Complete"), ("ListItems", str(len(items)))))

    def _status(self, action_id: str) -> bytes:
        """`action_status` for all channels: `Status` events, then `StatusComplete`."""
        items = [message(("Event", "Status"), ("Privilege", "Call"), *snapshot(channel),
                         ("Type", channel.get("Channel", "").partition("/")[0]),
                         ("DNID", ""), ("BridgeID", channel.get("BridgeId", "")),
                         ("Application", channel.get("Application", "Dial")),
                         ("Data", channel.get("ApplicationData", "")),
                         ("Seconds", "42"), ("ActionID", action_id))
                 for channel in self.channels]
        return (message(("Response", "Success"), ("ActionID", action_id),
                        ("EventList", "start"), ("Message", "Channel status will follow"))
                + b"".join(items)
                + message(("Event", "StatusComplete"), ("ActionID", action_id),
                          ("EventList", "Complete"), ("ListItems", str(len(items))),
                          ("Items", str(len(items)))))


SNAPSHOT = ("Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName",
            "ConnectedLineNum", "ConnectedLineName", "Language", "AccountCode", "Context",
            "Exten", "Priority", "Uniqueid", "Linkedid")
"""`ast_manager_build_channel_state_string_prefix` (main/manager_channels.c), in order."""
SNAPSHOT_DEFAULTS = {"ChannelState": "6", "ChannelStateDesc": "Up", "CallerIDNum": "<unknown>",
                     "CallerIDName": "<unknown>", "ConnectedLineNum": "<unknown>",
                     "ConnectedLineName": "<unknown>", "Language": "en", "Priority": "1"}


def snapshot(channel: Mapping[str, str]) -> list[tuple[str, str]]:
    """A channel's snapshot headers, as Asterisk writes them."""
    return [(key, channel.get(key, SNAPSHOT_DEFAULTS.get(key, ""))) for key in SNAPSHOT]
