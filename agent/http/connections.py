"""The HTTP listener's connection cap: aiohttp accepts connections without limit, and every
idle one holds a file descriptor, so enough of them starve FastAGI of sockets.

`ConnectionGate` is the protocol factory given to `loop.create_server`: below the cap it
hands the connection to aiohttp's server; at the cap it answers `503` in JSON and closes.
Idle connections (none or part of a request) are closed by aiohttp's keep-alive timer, which
`http.idle_timeout_s` sets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource

from aiohttp import web

from agent.ops.logs import Throttle

log = logging.getLogger("agent.http")

_BODY = json.dumps({"error": "overloaded",
                    "detail": "too many open connections; retry shortly"}).encode()
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
           b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
           % (len(_BODY), _BODY))


def default_cap() -> int:
    """A quarter of the process's open-file limit (at most 1024): the rest stays for
    FastAGI, the store and the CRM clients."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, min(1024, soft // 4)) if soft > 0 else 1024


class _Refused(asyncio.Protocol):
    """A connection over the cap: one 503, then closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(REFUSAL)
        transport.close()


class ConnectionGate:
    """Protocol factory: aiohttp's handler below `cap` open connections, a refusal above."""

    def __init__(self, server: web.Server, cap: int) -> None:
        self._server = server
        self.cap = cap
        self.refused = 0
        self._throttle = Throttle(10.0)

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self._server.connections) < self.cap:
            return self._server()
        self.refused += 1
        if self._throttle.allow()[0]:
            log.warning("http: %d connections open, the cap (http.max_connections): "
                        "refusing new ones with 503 (%d refused so far)",
                        self.cap, self.refused)
        return _Refused()
