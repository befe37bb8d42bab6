"""`crm-agent serve` that cannot start says why in one line and exits 2, never a traceback."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

from tests.net.test_serve import REPO, free_port


async def serve(tmp_path: Path, *extra: str, timeout_s: float = 30, **env: str
                ) -> tuple[int, str, float]:
    """Run `crm-agent serve` until it exits: its code, its stderr, how long it took."""
    config = tmp_path / "agent.yaml"
    config.write_text(f"store: {{url: 'sqlite:///var/agent.db'}}\n"
                      f"rules: {{dir: '{REPO / 'rules'}', watch: false}}\n")
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "--config", str(config), *extra, "serve",
        env={"PATH": "/usr/bin:/bin", "CRM_AGENT_HTTP__PORT": str(free_port()),
             "CRM_AGENT_AGI__PORT": str(free_port()), **env},
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL)
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout_s)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, stderr.decode(), time.monotonic() - started


def one_line(stderr: str) -> str:
    """The single `crm-agent: ...` line the agent printed last (logs may come before it)."""
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("crm-agent: "), stderr
    return last


@contextmanager
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize(("what", "variable", "setting"), [
    ("HTTP", "CRM_AGENT_HTTP__PORT", "http.port"),
    ("FastAGI", "CRM_AGENT_AGI__PORT", "agi.port"),
])
async def test_a_port_in_use_names_the_port_and_the_setting(
        tmp_path: Path, what: str, variable: str, setting: str) -> None:
    with taken_port() as port:
        code, stderr, _ = await serve(tmp_path, **{variable: str(port)})
    line = one_line(stderr)
    assert code == 2
    assert f"cannot listen for {what} on 127.0.0.1:{port}: the port is already in use" in line
    assert f"set {setting} (or {variable})" in line


async def test_an_unsupported_store_scheme_is_named_without_the_password(
        tmp_path: Path) -> None:
    code, stderr, _ = await serve(tmp_path, CRM_AGENT_STORE_URL="mysql://app:s3cr3t@db/crm")
    line = one_line(stderr)
    assert code == 2 and "unsupported store URL scheme 'mysql'" in line
    assert "s3cr3t" not in stderr


async def test_postgresql_refusing_connections(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    code, stderr, _ = await serve(tmp_path, CRM_AGENT_STORE_URL=url)
    line = one_line(stderr)
    assert code == 2 and "cannot open the store: postgres: cannot connect" in line
    assert line.rstrip().endswith(":") is False


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """Accepts connections and never says a word, like a PostgreSQL host that hangs."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        for writer in held:
            writer.close()
        server.close()


async def test_a_postgresql_that_never_answers_fails_at_the_connect_timeout(
        tmp_path: Path) -> None:
    async with silent_server() as port:
        code, stderr, took = await serve(
            tmp_path, CRM_AGENT_STORE_URL=f"postgresql://postgres@127.0.0.1:{port}/test",
            CRM_AGENT_STORE__CONNECT_TIMEOUT_S="1")
    line = one_line(stderr)
    assert code == 2
    assert "no answer within 1 s (store.connect_timeout_s)" in line
    assert took < 15


@pytest.mark.postgres
@pytest.mark.parametrize(("target", "reason"), [
    ("postgres@127.0.0.1:5432/no_such_database_here", 'database "no_such_database_here"'),
    ("no_such_role_here@127.0.0.1:5432/test", 'role "no_such_role_here"'),
])
async def test_postgresql_without_the_database_or_the_role(
        tmp_path: Path, pg_base_url: str, target: str, reason: str) -> None:
    host = pg_base_url.split("@", 1)[1].split("/", 1)[0]
    url = "postgresql://" + target.replace("127.0.0.1:5432", host)
    code, stderr, _ = await serve(tmp_path, CRM_AGENT_STORE_URL=url)
    line = one_line(stderr)
    assert code == 2 and reason in line and "does not exist" in line


async def test_an_unknown_variable_stops_the_start(tmp_path: Path) -> None:
    code, stderr, _ = await serve(tmp_path, CRM_AGENT_LOGFORMAT="text")
    assert code == 2 and "CRM_AGENT_LOGFORMAT: no such setting" in one_line(stderr)


async def test_a_store_folder_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, stderr, _ = await serve(tmp_path, CRM_AGENT_STORE_URL=f"sqlite:///{blocker}/agent.db")
    assert code == 2 and "cannot open the store: sqlite: cannot open" in one_line(stderr)
