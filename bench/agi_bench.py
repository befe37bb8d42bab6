#!/usr/bin/env python3
"""FastAGI load benchmark: keep N calls in flight against a FastAGI server, like Asterisk would.

    python bench/agi_bench.py --target floor,builtin --inflight 10,50 --seconds 10 --cpu 0

Targets: `HOST:PORT[/PID]` (a running agent; with its PID, its CPU is measured too), `floor`
(an `asyncio.Protocol` FastAGI server: one pre-encoded `EXEC MSet` of ~10 variables, no
parsing, no lookup: the best asyncio can do), `streams` (the idiomatic minimal asyncio FastAGI
server: `start_server`, `readline` up to the blank line, the same MSet) or `builtin`
(`agent.pbx.agi.AgiServer` with a trivial `route` script). `floor`, `streams` and `builtin` run
in a subprocess pinned to another core; the load generator pins itself to `--cpu`.

The load generator is an `asyncio.Protocol` (no streams) sending pre-encoded env blocks built
from the real Asterisk 22 capture, one per caller (callers in mixed formats: +33…, 0033…,
06…, with spaces; or `--callers FILE`, one a line). It answers every command `200 result=0`
and writes `HANGUP\\n` after the server closes, as Asterisk does. Latency is connect ->
MSet reply sent -> close seen. `gen CPU` is the generator's CPU time over wall time: near
100 % means the generator, not the server, is the bottleneck. `srv CPU` is the same for the
server subprocess; `us/call` turn those shares into CPU microseconds per call, the figure
that survives a busy machine (1e6 / srv us/call = calls/s one core could serve). `idle` and
`steal` are the whole machine's (from /proc/stat): idle near 0 with both processes under
100 % means something else is competing, and calls/s and latencies are noise.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "agi" / "asterisk-22-route.env.txt"
REPLY = b"200 result=0\n"
HANGUP = b"HANGUP\n"
ROUTE = {
    "CRM_ROUTE_TYPE": "queue", "CRM_ROUTE_TARGET": "support", "CRM_VOICEMAIL": "1",
    "CRM_AUDIO": "", "CRM_RULE": "known-customers", "CRM_KNOWN": "1",
    "CRM_CONTACT_ID": "4711", "CRM_CONTACT_NAME": "Dupont, Jean",
    "CRM_OWNER_EXTENSION": "201", "CRM_SCORE": "42",
}
FORMATS = ("+33{n}", "+33 {s}", "0033{n}", "0{n}", "0{s}", "+33 (0){s}")


# ----------------------------------------------------------------------------- callers, envs


def make_callers(count: int = 2000, seed: int = 7) -> list[str]:
    """French numbers (mostly mobiles) in the formats PBX trunks and CRMs actually use."""
    rng = random.Random(seed)
    callers = []
    for _ in range(count):
        digits = rng.choice("6667712345") + f"{rng.randrange(10**8):08d}"
        spaced = " ".join([digits[0], *(digits[i : i + 2] for i in range(1, 9, 2))])
        callers.append(rng.choice(FORMATS).format(n=digits, s=spaced))
    return callers


def make_envs(callers: Sequence[str]) -> list[bytes]:
    """One env block per caller: the real capture with callerid and uniqueid replaced."""
    template = FIXTURE.read_bytes().split(b"\n")
    envs = []
    for index, caller in enumerate(callers):
        values = {b"agi_callerid": caller.encode(), b"agi_calleridname": f"Caller {index}".encode(),
                  b"agi_uniqueid": f"1796088099.{index}".encode()}
        lines = [_replace(line, values) for line in template]
        envs.append(b"\n".join(lines))
    return envs


def _replace(line: bytes, values: dict[bytes, bytes]) -> bytes:
    key = line.partition(b": ")[0]
    return key + b": " + values[key] if key in values else line


# ----------------------------------------------------------------------------- load generator


class Caller(asyncio.Protocol):
    """One call as Asterisk makes it: env block, `200 result=0` per command, HANGUP at the end."""

    def __init__(self, env: bytes, done: asyncio.Future[int]) -> None:
        self._env = env
        self._done = done
        self._buffer = b""
        self._msets = 0
        self._others = 0
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass
        self._transport.write(self._env)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        buffer = self._buffer + data
        while (end := buffer.find(b"\n")) >= 0:
            if buffer.startswith(b"EXEC MSet "):
                self._msets += 1
            else:
                self._others += 1
            buffer = buffer[end + 1 :]
            self._transport.write(REPLY)
        self._buffer = buffer

    def eof_received(self) -> bool:
        assert self._transport is not None
        self._transport.write(HANGUP)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():  # the number of MSet commands, -1 for any other command
            self._done.set_result(-1 if self._others else self._msets)


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    bad: int = 0
    measuring: bool = False


async def worker(host: str, port: int, envs: Iterator[bytes], stop_at: float, tally: Tally) -> None:
    """Place calls back to back until `stop_at`: one call in flight per worker."""
    loop = asyncio.get_running_loop()
    while loop.time() < stop_at:
        done: asyncio.Future[int] = loop.create_future()
        start = time.perf_counter()
        try:
            await loop.create_connection(functools.partial(Caller, next(envs), done), host, port)
            commands = await done
        except OSError:
            tally.errors += 1
            continue
        if tally.measuring:
            tally.latencies.append(time.perf_counter() - start)
            tally.bad += commands != 1


def machine_ticks() -> tuple[int, int, int]:
    """(total, idle + iowait, steal) clock ticks of the whole machine, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(fields), fields[3] + fields[4], fields[7]


@dataclass
class Result:
    target: str
    inflight: int
    seconds: float
    latencies: list[float]
    errors: int
    bad: int
    gen_cpu: float
    server_cpu: float | None
    idle: float
    steal: float

    def row(self) -> list[str]:
        ordered = sorted(self.latencies) or [0.0]
        server = ("n/a", "n/a") if self.server_cpu is None else (
            f"{self.server_cpu:.0%}", self._per_call(self.server_cpu))
        return [self.target, str(self.inflight), f"{len(self.latencies)}",
                f"{len(self.latencies) / self.seconds:,.0f}", f"{_ms(ordered, 0.5):.2f}",
                f"{_ms(ordered, 0.99):.2f}", f"{ordered[-1] * 1000:.1f}",
                str(self.errors + self.bad), f"{self.gen_cpu:.0%}", self._per_call(self.gen_cpu),
                *server, f"{self.idle:.0%}", f"{self.steal:.0%}"]

    def _per_call(self, cpu_share: float) -> str:
        """CPU microseconds per call from a share of one core over the window."""
        return f"{cpu_share * self.seconds / max(len(self.latencies), 1) * 1e6:.0f}"


def _ms(ordered: list[float], quantile: float) -> float:
    return ordered[int(quantile * (len(ordered) - 1))] * 1000


async def run_round(target: Target, inflight: int, seconds: float, warmup: float,
                    envs: Iterator[bytes]) -> Result:
    loop = asyncio.get_running_loop()
    tally = Tally()
    stop_at = loop.time() + warmup + seconds
    workers = [asyncio.create_task(worker(target.host, target.port, envs, stop_at, tally))
               for _ in range(inflight)]
    await asyncio.sleep(warmup)  # timing the window, not synchronising
    tally.measuring = True
    cpu, server_cpu, wall = time.process_time(), target.cpu_time(), time.perf_counter()
    machine = machine_ticks()
    await asyncio.sleep(seconds)
    tally.measuring = False
    wall = time.perf_counter() - wall
    cpu = (time.process_time() - cpu) / wall
    server = None if server_cpu is None else (target.cpu_time() or 0.0) - server_cpu
    total, idle, steal = (after - before for after, before in zip(machine_ticks(), machine,
                                                                   strict=True))
    await asyncio.gather(*workers)
    return Result(target.name, inflight, wall, tally.latencies, tally.errors, tally.bad, cpu,
                  None if server is None else server / wall, idle / total, steal / total)


# ----------------------------------------------------------------------------- servers


class FloorSession(asyncio.Protocol):
    """The floor: wait for the blank line, send one pre-encoded MSet, close on its reply."""

    def __init__(self, command: bytes) -> None:
        self._command = command
        self._buffer = b""
        self._sent = False
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        if self._sent:
            if b"\n" in data:  # `200 result=0`: done
                self._transport.close()
            return
        self._buffer += data
        if b"\n\n" in self._buffer:
            self._sent = True
            self._transport.write(self._command)


class ParentWatch(asyncio.Protocol):
    """Stops the server subprocess when its stdin closes: the parent has finished or died."""

    def __init__(self, stopping: asyncio.Event) -> None:
        self._stopping = stopping

    def connection_lost(self, exc: Exception | None) -> None:
        self._stopping.set()


async def serve(kind: str, deadline_ms: int) -> None:
    """Subprocess entry: serve on 127.0.0.1:0, print `port N`, stop when stdin closes (or on
    SIGTERM), then print the server's counters."""
    from agent.pbx.agi import AgiRequest, AgiServer, encode_mset  # only the server side needs it

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    await loop.connect_read_pipe(lambda: ParentWatch(stopping), sys.stdin)
    command = encode_mset(ROUTE)  # what both floors send
    if kind == "streams":

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            """The idiomatic minimal FastAGI server: read the env lines up to the blank one,
            set the variables, read the reply, hang up."""
            while await reader.readline() not in (b"\n", b""):
                pass
            writer.write(command)
            await reader.readline()
            writer.close()

        streams = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
        print(f"port {streams.sockets[0].getsockname()[1]}", flush=True)
        await stopping.wait()
        streams.close()
        return
    if kind == "floor":
        floor = await loop.create_server(lambda: FloorSession(command), "127.0.0.1", 0,
                                         backlog=4096)
        print(f"port {floor.sockets[0].getsockname()[1]}", flush=True)
        await stopping.wait()
        floor.close()
        return

    async def route(request: AgiRequest) -> dict[str, str]:
        return ROUTE  # trivial: what AgiServer itself costs, without routing

    agi = AgiServer({"route": route}, port=0, deadline_s=deadline_ms / 1000)
    await agi.start()
    print(f"port {agi.port}", flush=True)
    await stopping.wait()
    await agi.stop(grace_s=2.0)
    print(f"stats sessions={agi.sessions} outcomes={dict(agi.outcomes)} "
          f"errors={dict(agi.errors)}", flush=True)


@dataclass
class Target:
    name: str
    host: str
    port: int
    process: subprocess.Popen[str] | None = None
    pid: int | None = None

    def cpu_time(self) -> float | None:
        """CPU seconds used so far by the server process, all its threads (None when an
        external target was given without its PID)."""
        pid = self.process.pid if self.process is not None else self.pid
        if pid is None:
            return None
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> str:
        if self.process is None:
            return ""
        out, _ = self.process.communicate(timeout=10)  # closes its stdin: it stops
        return out.strip()


def open_target(spec: str, cpu: int, loop_name: str, deadline_ms: int) -> Target:
    if spec not in SERVERS:
        address, _, pid = spec.partition("/")
        host, _, port = address.rpartition(":")
        return Target(address, host or "127.0.0.1", int(port), pid=int(pid) if pid else None)
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", spec, "--cpu", str(cpu),
               "--loop", loop_name, "--deadline-ms", str(deadline_ms)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               cwd=ROOT)
    assert process.stdout is not None
    line = process.stdout.readline().split()
    if line[:1] != ["port"]:
        process.kill()
        raise SystemExit(f"{spec} server did not start")
    return Target(spec, "127.0.0.1", int(line[1]), process)


# ----------------------------------------------------------------------------- CLI


def run(coro: Coroutine[Any, Any, Any], loop_name: str) -> Any:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop_name == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def pin(cpu: int) -> int:
    """Pin this process to `cpu`; return the core for the server (another one if possible)."""
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    others = [core for core in allowed if core != cpu]
    return others[0] if others else cpu


LOOPS = ("asyncio", "uvloop")
SERVERS = ("floor", "streams", "builtin")


def _default_gen_loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="floor",
                        help="HOST:PORT[/PID] (PID: measure that server's CPU too), floor, "
                             "streams or builtin; several: a,b,…")
    parser.add_argument("--inflight", default="10,50", help="calls in flight, e.g. 10,50")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per round")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--callers", type=Path, help="file of caller numbers, one a line")
    parser.add_argument("--cpu", type=int, default=0, help="core of the load generator")
    parser.add_argument("--loop", choices=LOOPS, default="asyncio", help="servers' event loop")
    parser.add_argument("--gen-loop", choices=LOOPS, default=_default_gen_loop(),
                        help="load generator's event loop (uvloop when installed: cheaper)")
    parser.add_argument("--deadline-ms", type=int, default=300, help="builtin AgiServer deadline")
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


HEADER = ["target", "inflight", "calls", "calls/s", "p50 ms", "p99 ms", "max ms", "errors",
          "gen CPU", "gen us/call", "srv CPU", "srv us/call", "idle", "steal"]


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    for row in [HEADER, *rows]:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    server_cpu = pin(args.cpu)
    if args.serve:
        run(serve(args.serve, args.deadline_ms), args.loop)
        return
    callers = (args.callers.read_text().split("\n") if args.callers else make_callers())
    envs = itertools.cycle(make_envs([caller for caller in callers if caller.strip()]))
    rows = []
    for spec in args.target.split(","):
        target = open_target(spec, server_cpu, args.loop, args.deadline_ms)
        try:
            for inflight in (int(n) for n in args.inflight.split(",")):
                result = run(run_round(target, inflight, args.seconds, args.warmup, envs),
                             args.gen_loop)
                rows.append(result.row())
        finally:
            stats = target.close()
        if stats:
            print(f"# {spec}: {stats}", file=sys.stderr)
    print(f"# generator: {args.gen_loop} on cpu {args.cpu}; servers: {args.loop} on cpu "
          f"{server_cpu}; latency = connect -> MSet reply sent -> close; idle/steal: machine")
    print_table(rows)


if __name__ == "__main__":
    main()
