"""Inbound webhooks (`/events/call`, `/leads`, `/dispositions`): who may send, and replays.

A sender authenticates with the bearer token or, when `http.webhook_secret` is set, with
`X-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, whose time must be
within 5 minutes of ours, either way. A signed request is remembered by its digest while
its time is in that window: the same signature again is answered `200 {"duplicate": true}`
without effect (a sender retries what was not a 2xx, so a 2xx tells it to stop), or `409`
while the first is still being handled. A request answered with an error is forgotten,
so that the sender's retry is handled afresh.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from agent.http.core import CONFIG, ApiError, Handler, bearer_ok, require_token

SIGNATURE_MAX_AGE_S = 300
SEEN_MAX = 50_000
"""Signatures remembered at most; past it the oldest is forgotten (and could be replayed):
a flood of validly signed requests cannot grow the agent's memory."""
Claim = Literal["new", "pending", "done"]
DUPLICATE = {"duplicate": True,
             "detail": "this signed request was already received; nothing was done again"}


@dataclass(frozen=True, slots=True)
class Signature:
    stamp: int
    digest: bytes


def verify_signature(secret: str, header: str, body: bytes, now: float) -> Signature:
    """The valid signature in `header`, or a 401 saying what is wrong with it."""
    parts = {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in header.split(","))}
    raw_stamp = parts.get("t", "")
    if not (raw_stamp.isascii() and raw_stamp.isdigit() and len(raw_stamp) <= 12):
        raise ApiError(401, "bad-signature", "X-Signature needs t=<unix seconds>,v1=<hex>")
    stamp = int(raw_stamp)
    if stamp - now > SIGNATURE_MAX_AGE_S:
        raise ApiError(401, "bad-signature", "X-Signature time is more than 5 minutes ahead "
                                             "of the agent's clock")
    if now - stamp > SIGNATURE_MAX_AGE_S:
        raise ApiError(401, "bad-signature", "X-Signature is older than 5 minutes")
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).digest()
    try:
        given = bytes.fromhex(parts.get("v1", ""))
    except ValueError:
        given = b""
    if not hmac.compare_digest(expected, given):
        raise ApiError(401, "bad-signature", "X-Signature does not match the body")
    return Signature(stamp, expected)


class SeenSignatures:
    """Digests of signed requests being handled (pending) or handled (done), each until
    its time leaves the window; at most `size`, the oldest forgotten first."""

    def __init__(self, size: int = SEEN_MAX) -> None:
        self._items: OrderedDict[bytes, tuple[float, bool]] = OrderedDict()
        self._size = max(1, size)

    def claim(self, signature: Signature, now: float) -> Claim:
        items = self._items
        while items and next(iter(items.values()))[0] <= now:
            items.popitem(last=False)
        item = items.get(signature.digest)
        if item is not None and item[0] > now:
            return "done" if item[1] else "pending"
        items[signature.digest] = (signature.stamp + SIGNATURE_MAX_AGE_S, False)
        while len(items) > self._size:
            items.popitem(last=False)
        return "new"

    def settle(self, signature: Signature, *, done: bool) -> None:
        item = self._items.get(signature.digest)
        if item is not None and done:
            self._items[signature.digest] = (item[0], True)
        elif item is not None:
            del self._items[signature.digest]

    def __len__(self) -> int:
        return len(self._items)


SEEN = web.AppKey("seen_signatures", SeenSignatures)


async def require_webhook(request: web.Request) -> Signature | None:
    """A bearer token (None), or a valid `X-Signature` when a secret is set (its signature)."""
    if bearer_ok(request):
        return None
    secret = request.app[CONFIG].http.webhook_secret
    header = request.headers.get("X-Signature")
    if secret is not None and header is not None:
        return verify_signature(secret.get_secret_value(), header, await request.read(),
                                time.time())
    require_token(request)
    return None


def webhook(handler: Handler) -> Handler:
    """`handler` behind `require_webhook`, answering a replayed signature as a duplicate."""

    @functools.wraps(handler)
    async def once(request: web.Request) -> web.StreamResponse:
        signature = await require_webhook(request)
        if signature is None:
            return await handler(request)
        seen = request.app[SEEN]
        claim = seen.claim(signature, time.time())
        if claim == "done":
            return web.json_response(DUPLICATE)
        if claim == "pending":
            raise ApiError(409, "in-progress", "this signed request is being handled; retry")
        done = False
        try:
            response = await handler(request)
            done = response.status < 300
            return response
        finally:
            seen.settle(signature, done=done)

    return once
