"""A real Asterisk for the dialplan tests: started in a temp dir on free ports, with the shipped
`dialplan/extensions_crm.conf` included unmodified, Local channels standing in for the trunk
and the phones (as in tests/fixtures/ami), and a small AMI client to place calls and watch
where they go.

Asterisk is found through `ASTERISK_BIN` or `asterisk` on the PATH; the tests are skipped
with that reason when there is none.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import wave
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).parents[2]
INCLUDE = REPO / "dialplan" / "extensions_crm.conf"
AMI_USER, AMI_SECRET = "tests", "tests-secret"


def asterisk_binary() -> Path | None:
    found = os.environ.get("ASTERISK_BIN") or shutil.which("asterisk")
    return Path(found) if found and Path(found).is_file() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PHONES = """
; The employees' phones (Local channels): 201 answers after 1 s and talks 2 s, 202 never
; answers, 203 is busy, 204 answers like 201.
[employees]
exten => 201,1,Ringing()
 same => n,Wait(1)
 same => n,Answer()
 same => n,Wait(2)
 same => n,Hangup()
exten => 202,1,Ringing()
 same => n,Wait(60)
 same => n,Hangup()
exten => 203,1,Busy(5)
exten => 204,1,Goto(employees,201,1)

; The public network behind the trunk: every number answers like 201.
[pstn]
exten => _[+0-9].,1,Goto(employees,201,1)

; The trunk, as the include's header says.
[from-trunk]
exten => _[+0-9].,1,Goto(crm-inbound,${EXTEN},1)

; The caller's side of an originated call: wait, or press a key once answered.
[caller]
exten => wait,1,Wait(90)
exten => _key-X,1,Wait(1.5)
 same => n,SendDTMF(${EXTEN:4})
 same => n,Wait(90)

; Where a blind transfer sends the caller: the extension's phone.
[transfer]
exten => _2XX,1,Dial(Local/${EXTEN}@employees,10)
 same => n,Hangup()

; A dialplan of the admin's own that asks the agent for the caller's record, then runs a
; script the agent does not have.
[lookup-then-typo]
exten => _X.,1,AGI(${CRM_AGENT}/lookup)
 same => n,AGI(${CRM_AGENT}/no-such-script)
 same => n,Hangup()

; The admin's own IVR context, holding only `main` (for an unknown-menu test).
[own-menus]
exten => main,1,Answer()
 same => n,Hangup()
"""

QUEUE_MEMBERS = {"sales": "204", "support": "202"}
"""Each queue's one member (the fallback queue's is 201, who answers)."""


def queues_conf(fallback: str) -> str:
    sections = [f"""[{name}]
strategy = ringall
timeout = 10
joinempty = yes
leavewhenempty = no
member => Local/{member}@employees,0,{member},Local/{member}@employees
""" for name, member in {fallback: "201", **QUEUE_MEMBERS}.items()]
    return "\n".join(["[general]\npersistentmembers = no\n", *sections])


VOICEMAIL = """
[general]
format = wav
maxsecs = 2
minsecs = 0
maxsilence = 0
skipms = 3000
attach = no

[default]
100 => 1234,Reception
201 => 1234,Alice
202 => 1234,Bob
203 => 1234,Carol
"""


@dataclass
class Call:
    """What one originated call did, from the AMI events of its channels."""

    linkedid: str
    events: list[dict[str, str]] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)
    """The call's AMI messages byte for byte, as a recorded trace (tests/fixtures/ami)."""
    open_channels: set[str] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def apps(self, context_prefix: str = "crm-") -> list[tuple[str, str]]:
        """(context, application) of each dialplan step in the include, in order."""
        return [(e["Context"], e["Application"]) for e in self.events
                if e.get("Event") == "Newexten" and e.get("Context", "").startswith(context_prefix)]

    def reached(self, application: str) -> list[str]:
        """The data of each `application` step run in the include (e.g. the queue joined)."""
        return [e.get("AppData", "") for e in self.events if e.get("Event") == "Newexten"
                and e.get("Application") == application
                and e.get("Context", "").startswith("crm-")]

    async def event(self, kind: str, channel_prefix: str, *, app: str | None = None,
                    timeout_s: float = 15.0) -> dict[str, str]:
        """The first `kind` event of a channel whose name starts with `channel_prefix` (and,
        given `app`, that runs that application)."""
        async with asyncio.timeout(timeout_s):
            while True:
                for event in self.events:
                    if event.get("Event") == kind and \
                            event.get("Channel", "").startswith(channel_prefix) and \
                            app in (None, event.get("Application")):
                        return event
                await asyncio.sleep(0.05)

    def var(self, name: str) -> str | None:
        """The last value a channel of the call set `name` to."""
        values = [e.get("Value", "") for e in self.events
                  if e.get("Event") == "VarSet" and e.get("Variable") == name]
        return values[-1] if values else None


class Ami:
    """A minimal AMI client: actions with ActionID, events routed to calls by Linkedid."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.ids = itertools.count(1)
        self.pending: dict[str, asyncio.Future[dict[str, str]]] = {}
        self.calls: dict[str, Call] = {}
        self.log: list[dict[str, str]] = []
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, port: int) -> Ami:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()  # "Asterisk Call Manager/..."
        ami = cls(reader, writer)
        answer = await ami.action("Login", Username=AMI_USER, Secret=AMI_SECRET)
        assert answer.get("Response") == "Success", answer
        return ami

    async def action(self, name: str, **fields: str) -> dict[str, str]:
        action_id = f"t{next(self.ids)}"
        future: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self.pending[action_id] = future
        lines = [f"Action: {name}", f"ActionID: {action_id}",
                 *(f"{k}: {v}" for k, v in fields.items())]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async with asyncio.timeout(10):
            return await future

    async def _read(self) -> None:
        message: dict[str, str] = {}
        raw = bytearray()
        while line := await self.reader.readline():
            raw += line
            text = line.decode(errors="replace").rstrip("\r\n")
            if text:
                key, _, value = text.partition(": ")
                message[key] = value
                continue
            if message:
                self._dispatch(message, bytes(raw))
            message, raw = {}, bytearray()

    def _dispatch(self, message: dict[str, str], raw: bytes) -> None:
        future = self.pending.pop(message.get("ActionID", ""), None)
        if "Response" in message and future is not None and not future.done():
            future.set_result(message)
            return
        self.log.append(message)
        ids = {v for k, v in message.items() if k.endswith("Linkedid")}  # BlindTransfer too
        call = next((self.calls[i] for i in ids if i in self.calls), None)
        if call is None:
            return
        call.raw += raw
        if message.get("Linkedid") != call.linkedid:
            return
        call.events.append(message)
        channel = message.get("Channel", "")
        if message.get("Event") == "Newchannel":
            call.open_channels.add(channel)
        elif message.get("Event") == "Hangup":
            call.open_channels.discard(channel)
            if not call.open_channels:
                call.done.set()

    async def setvar(self, name: str, value: str) -> None:
        """Set a dialplan global, as an admin would with `dialplan set global`."""
        answer = await self.action("Setvar", Variable=name, Value=value)
        assert answer.get("Response") == "Success", answer

    async def call(self, did: str, caller: str, *, press: str | None = None,
                   context: str = "from-trunk", timeout_s: float = 40.0) -> Call:
        """An inbound call from `caller` on `did` through the trunk context, until every
        channel of it has hung up; `press` is a key the caller presses once answered."""
        call = await self.dial(did, caller, press=press, context=context)
        async with asyncio.timeout(timeout_s):
            await call.done.wait()
        return call

    async def dial(self, did: str, caller: str, *, press: str | None = None,
                   context: str = "from-trunk") -> Call:
        """Place the call of `call` (into `context`) and return at once."""
        linkedid = f"test-{next(self.ids)}"
        call = self.calls[linkedid] = Call(linkedid)
        target = {"Context": "caller", "Exten": f"key-{press}", "Priority": "1"} if press \
            else {"Context": "caller", "Exten": "wait", "Priority": "1"}
        answer = await self.action("Originate", Channel=f"Local/{did}@{context}",
                                   CallerID=f'"" <{caller}>', ChannelId=linkedid,
                                   OtherChannelId=f"{linkedid}-2", Timeout="30000",
                                   Async="true", **target)
        assert answer.get("Response") == "Success", answer
        return call

    async def close(self) -> None:
        self.writer.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await self._task


@dataclass
class Pbx:
    """A running Asterisk: its AMI port, a connected client, its folder."""

    ami_port: int
    ami: Ami
    root: Path
    process: asyncio.subprocess.Process

    def messages(self) -> str:
        path = self.root / "log" / "messages"
        return path.read_text(errors="replace") if path.exists() else ""


SOUNDS = ("menu-prompt", "crm-ivr-main", "crm-ivr-loop", "vm-intro", "vm-theperson",
          "vm-isunavail", "vm-isonphone", "beep", "vm-goodbye", "vm-msgsaved")
"""Prompts the calls play (half a second of silence each): Read and VoiceMail give up at once
on a missing file, as they would on a PBX without them."""


def write_silence(path: Path, seconds: float = 0.5) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0\0" * int(8000 * seconds))


def write_configs(root: Path, binary: Path, ami_port: int, globals_: Mapping[str, str],
                  fallback_queue: str) -> Path:
    """An Asterisk tree under `root`; returns the asterisk.conf to start it with."""
    prefix = binary.resolve().parents[1]  # .../sbin/asterisk -> the install prefix
    etc = root / "etc"
    for sub in ("etc", "lib", "spool", "run", "log", "db", "keys"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    modules = next((p for p in (prefix / "lib" / "asterisk" / "modules",
                                prefix / "lib64" / "asterisk" / "modules",
                                Path("/usr/lib/asterisk/modules"),
                                Path("/usr/lib/x86_64-linux-gnu/asterisk/modules"))
                    if p.is_dir()), prefix / "lib" / "asterisk" / "modules")
    data = root / "data"  # the install's data (its XML docs are needed to start), own sounds
    data.mkdir(exist_ok=True)
    installed = prefix / "var" / "lib" / "asterisk"
    for entry in installed.iterdir() if installed.is_dir() else ():
        if entry.name != "sounds" and not (data / entry.name).exists():
            (data / entry.name).symlink_to(entry)
    sounds = data / "sounds" / "en"
    sounds.mkdir(parents=True, exist_ok=True)
    for name in SOUNDS:
        write_silence(sounds / f"{name}.wav")
    files = {
        "asterisk.conf": f"""[directories]
astetcdir => {etc}
astmoddir => {modules}
astvarlibdir => {root / 'lib'}
astdbdir => {root / 'db'}
astkeydir => {root / 'keys'}
astdatadir => {data}
astagidir => {root / 'lib'}
astspooldir => {root / 'spool'}
astrundir => {root / 'run'}
astlogdir => {root / 'log'}
astsbindir => {binary.parent}
[options]
verbose = 3
nofork = yes
""",
        "modules.conf": """[modules]
autoload = yes
noload = chan_dahdi.so
noload = res_pjsip.so
noload = chan_pjsip.so
noload = res_ari.so
noload = res_http_websocket.so
noload = cdr_custom.so
noload = cel_custom.so
""",
        "logger.conf": "[general]\n[logfiles]\nmessages => notice,warning,error,verbose\n",
        "manager.conf": f"""[general]
enabled = yes
port = {ami_port}
bindaddr = 127.0.0.1

timestampevents = yes

[{AMI_USER}]
secret = {AMI_SECRET}
read = all
write = all
""",
        "extensions.conf": "[general]\nstatic = yes\nwriteprotect = yes\n\n"
                           f"#include \"{INCLUDE}\"\n\n"
                           "[globals]\n" + "".join(f"{k}={v}\n" for k, v in globals_.items())
                           + PHONES,
        "queues.conf": queues_conf(fallback_queue),
        "voicemail.conf": VOICEMAIL,
        "musiconhold.conf": "[general]\n",
        "http.conf": "[general]\nenabled = no\n",
        "cdr.conf": "[general]\nenable = no\n",
        "indications.conf": "[general]\ncountry = fr\n[fr]\ndescription = France\n"
                            "ringcadence = 1500,3500\nbusy = 440/500,0/500\n"
                            "ring = 440/1500,0/3500\n",
    }
    for name, text in files.items():
        (etc / name).write_text(text)
    return etc / "asterisk.conf"


@contextlib.asynccontextmanager
async def running_pbx(root: Path, binary: Path, globals_: Mapping[str, str],
                      fallback_queue: str = "reception",
                      ami_port: int | None = None) -> AsyncIterator[Pbx]:
    """Asterisk in the foreground under `root`, until the block ends (or it is killed)."""
    ami_port = ami_port or free_port()
    conf = write_configs(root, binary, ami_port, globals_, fallback_queue)
    process = await asyncio.create_subprocess_exec(
        str(binary), "-C", str(conf), "-f", "-n", "-q",
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ami: Ami | None = None
    try:
        async with asyncio.timeout(30):
            while ami is None:
                assert process.returncode is None, "asterisk exited at start-up"
                try:
                    ami = await Ami.connect(ami_port)
                except (ConnectionError, OSError):
                    await asyncio.sleep(0.1)
            await until_booted(ami)
        yield Pbx(ami_port, ami, root, process)
    finally:
        if ami is not None:
            if process.returncode is None:
                with contextlib.suppress(Exception):
                    await ami.action("Command", Command="core stop now")
            await ami.close()
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


async def until_booted(ami: Ami) -> None:
    """Until the dialplan and app_queue are loaded (AMI answers before they are)."""
    while True:
        answer = await ami.action("QueueSummary")
        if answer.get("Response") == "Success":
            return
        await asyncio.sleep(0.1)

