"""FastAGI (§3): the pure protocol (`protocol`), the asyncio server (`server`), its
per-connection `asyncio.Protocol` (`session`) and the interface between the two (`host`)."""

from __future__ import annotations

from agent.pbx.agi.host import Script
from agent.pbx.agi.protocol import (
    AgiProtocolError,
    AgiReply,
    AgiRequest,
    encode_mset,
    encode_msets,
    parse_env,
    parse_reply,
    sanitize,
)
from agent.pbx.agi.server import AgiServer, Fallback, no_route
from agent.pbx.agi.session import AgiSession

__all__ = ["AgiProtocolError", "AgiReply", "AgiRequest", "AgiServer", "AgiSession", "Fallback",
           "Script", "encode_mset", "encode_msets", "no_route", "parse_env", "parse_reply",
           "sanitize"]
