"""Asterisk killed with calls up (issue #12, item 8): once it is back, the agent closes the
calls that are gone at once, ending when the PBX died, instead of hours later."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.app import Agent
from tests.conftest import agent_config
from tests.pbx.asterisk import AMI_SECRET, AMI_USER, REPO, asterisk_binary, free_port, running_pbx
from tests.pbx.test_dialplan_pbx import GLOBALS, RULES, ami_ready, journaled

BINARY = asterisk_binary()
pytestmark = [
    pytest.mark.skipif(BINARY is None, reason="no Asterisk: set ASTERISK_BIN or put asterisk "
                                              "on the PATH to run the real-PBX tests"),
    pytest.mark.timeout(120),
]


async def test_calls_open_when_asterisk_dies_are_closed_when_it_is_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert BINARY is not None
    caplog.set_level("DEBUG")
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    (rules / "routing.yaml").write_text(RULES)
    agi_port, ami_port = free_port(), free_port()
    pbx_globals = {**GLOBALS, "CRM_AGENT": f"agi://127.0.0.1:{agi_port}"}
    agent = Agent(agent_config(
        tmp_path, CRM_AGENT_RULES__DIR=str(rules), CRM_AGENT_AGI__PORT=str(agi_port),
        CRM_AGENT_AMI__ENABLED="true", CRM_AGENT_AMI__PORT=str(ami_port),
        CRM_AGENT_AMI__USERNAME=AMI_USER, CRM_AGENT_AMI_SECRET=AMI_SECRET,
        CRM_AGENT_AMI__GRACE_S="0.3", CRM_AGENT_AMI__RECONNECT_MAX_S="1"))
    async with running_pbx(tmp_path / "asterisk", BINARY, pbx_globals, ami_port=ami_port) as pbx:
        await agent.start()
        try:
            await ami_ready(agent)
            call = await pbx.ami.dial("0100000013", "0612345617")  # a menu: ~30 s up
            await call.event("Newexten", "Local/0100000013@from-trunk")
            await asyncio.sleep(2)
            pbx.process.send_signal(signal.SIGKILL)
            await pbx.process.wait()
            died = datetime.now(UTC)
            assert agent.store is not None
            assert await agent.store.get_call(call.linkedid) is None  # still open
            async with running_pbx(tmp_path / "asterisk", BINARY, pbx_globals,
                                   ami_port=ami_port):
                record = await journaled(agent, call, 20)
            back = datetime.now(UTC)
        finally:
            await agent.stop()
    assert record.ended_at is not None and record.started_at is not None
    assert record.ended_at > record.started_at
    assert abs((record.ended_at - died).total_seconds()) < 1.5  # when the PBX died
    assert (back - died).total_seconds() < 20  # not after ami.max_idle_s (4 h)
    assert (record.answered, record.did_raw) == (False, "0100000013")
    delays = [float(m) for m in re.findall(r"reconnecting in ([\d.]+) s", caplog.text)]
    assert delays and set(delays) <= {0.5, 1.0}  # what it waits: doubling, capped at 1 s
    assert "protocol version" not in caplog.text  # panoramisk's banner line
