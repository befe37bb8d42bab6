"""`crm-agent serve` as systemd runs it: a real process, real ports, SIGTERM to stop."""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from tests.net.fake_asterisk import call

REPO = Path(__file__).parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_healthy(port: int, proc: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            assert proc.returncode is None, "agent exited during start-up"
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    raise AssertionError("agent did not become healthy")


async def test_serve_generates_token_routes_and_stops_on_sigterm(tmp_path: Path) -> None:
    http_port, agi_port = free_port(), free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(f"store: {{url: 'sqlite:///var/agent.db'}}\n"
                      f"http: {{port: {http_port}}}\nagi: {{port: {agi_port}}}\n"
                      f"rules: {{dir: '{REPO / 'rules'}'}}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "--config", str(config), "serve",
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL)
    try:
        await wait_healthy(http_port, proc)
        token = (tmp_path / "var" / "token").read_text().strip()
        assert len(token) >= 32
        async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{http_port}/api/contacts",
                headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200
        session = await call(agi_port)
        assert session.variables["CRM_ROUTE_TYPE"]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        assert proc.stderr is not None
        logs = (await proc.stderr.read()).decode()
        assert "stopping" in logs and token not in logs
        # `event_loop: auto`: uvloop when installed (the `fast` extra), else asyncio
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
        assert f"event loop {loop}" in logs
        assert "+33612345678" not in logs
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_refuses_public_bind_without_token(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("store: {url: 'sqlite:///var/agent.db'}\nhttp: {host: 0.0.0.0}\n"
                      f"rules: {{dir: '{REPO / 'rules'}'}}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "--config", str(config), "serve",
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL)
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"set http.token" in stderr
