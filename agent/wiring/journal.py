"""Wiring of the journal feature into the running agent (see `agent.app.FEATURES`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.app import Agent


async def prepare(agent: Agent) -> None:
    """Before HTTP starts: add routes and app keys, start background workers."""


async def start(agent: Agent) -> None:
    """After HTTP is up: start listeners facing the PBX."""
