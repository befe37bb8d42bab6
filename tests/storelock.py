"""Another process holding an agent's SQLite store: the way to make a real store hang."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HOLD_WAL_LOCKS = """
import fcntl, os, sys
fd = os.open(sys.argv[1] + "-shm", os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 8, 120)  # every WAL lock byte, readers' too
print("locked", flush=True)
sys.stdin.read()
"""


@contextmanager
def sqlite_locked(path: Path) -> Iterator[None]:
    """Another process holding the WAL-index locks of the SQLite file at `path`: every read
    then retries for about 10 s before failing with 'locking protocol'."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WAL_LOCKS, str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.communicate("", timeout=10)
