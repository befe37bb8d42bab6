"""Signed, expiring links to call recordings (§7.1): the CRM never gets a raw file path.

A link is `{public_url}/recordings/{id}?exp={unix}&sig={hex}` with
`sig = HMAC-SHA256(secret, "{id}\\n{exp}")`. The id is the file's path relative to
`recordings.dir`. Asterisk reports absolute paths on the PBX (`MIXMONITOR_FILENAME`, e.g.
`/var/spool/asterisk/monitor/in-0140000201-1796088499.3.wav`); the agent serves the
directory those files are synced or mounted into, so an absolute path maps to its file name.

The secret is `recordings.secret` (`CRM_AGENT_RECORDING_SECRET`); when unset it is derived
from the API token, so rotating the token also revokes every link handed out.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlsplit

from agent.core.model import CallRecord

MAX_ID_LEN = 512


def derive_secret(token: str) -> bytes:
    return hmac.new(token.encode(), b"crm-agent recording links v1", hashlib.sha256).digest()


def sign(recording_id: str, exp: int, secret: bytes) -> str:
    message = f"{recording_id}\n{exp}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def verify(recording_id: str, exp: str | int, sig: str, secret: bytes, *, now: float) -> bool:
    """True for an unexpired link signed with `secret` (constant-time comparison)."""
    try:
        expires = int(exp)
    except (TypeError, ValueError):
        return False
    if expires < now:
        return False
    return hmac.compare_digest(sign(recording_id, expires, secret), sig)


def link(base_url: str, recording_id: str, ttl_s: float, secret: bytes, *, now: float) -> str:
    exp = int(now + ttl_s)
    path = quote(recording_id, safe="/")
    return (f"{base_url.rstrip('/')}/recordings/{path}?exp={exp}"
            f"&sig={sign(recording_id, exp, secret)}")


def recording_id(raw: str | None) -> str | None:
    """The id of a recording the PBX reported: a file name for absolute paths, else the
    relative path itself; None for nothing usable (URLs are handled by the caller)."""
    if not raw or "\x00" in raw:
        return None
    path = PurePosixPath(raw.strip())
    if path.is_absolute():
        return path.name or None
    return safe_id(str(path))


def safe_id(value: str) -> str | None:
    """`value` when it names a file under the recordings dir, else None (`..`, absolute)."""
    if not value or len(value) > MAX_ID_LEN or "\x00" in value or "\\" in value:
        return None
    path = PurePosixPath(value)
    if path.is_absolute() or any(part in ("..", ".") for part in path.parts):
        return None
    return str(path)


class RecordingLinks:
    """Recording links of one agent: signs them and maps ids back to files, safely."""

    def __init__(self, directory: Path, secret: bytes, base_url: str, ttl_s: float, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory, self.secret, self.base_url = directory, secret, base_url
        self.ttl_s, self.clock = ttl_s, clock

    def url(self, call: CallRecord) -> str | None:
        """The link to hand to the CRM for this call's recording (a URL stays a URL)."""
        raw = call.recording
        if raw and urlsplit(raw).scheme in ("http", "https"):
            return raw
        rid = recording_id(raw)
        if rid is None:
            return None
        return link(self.base_url, rid, self.ttl_s, self.secret, now=self.clock())

    def verify(self, recording_id: str, exp: str, sig: str) -> bool:
        return verify(recording_id, exp, sig, self.secret, now=self.clock())

    def path(self, recording_id: str) -> Path | None:
        """The file for an id, or None: missing, or outside the directory (incl. symlinks)."""
        rid = safe_id(recording_id)
        if rid is None:
            return None
        root = self.directory.resolve()
        try:
            target = (root / rid).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not target.is_relative_to(root) or not target.is_file():
            return None
        return target
