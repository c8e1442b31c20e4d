"""One build at a time per output folder: ``OUT/.regionshards.lock`` holds the builder's host and pid.

The lock is created with ``O_CREAT | O_EXCL`` (atomic on local and NFSv3+ file systems). A second build into the
same folder refuses, naming the holder. A lock left by a killed build is recognised as stale when it names this
host and a pid that no longer runs (or runs another program since: the start time recorded by the kernel
differs), and is then taken over; a lock from another host is never guessed at: the message says how to remove it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

LOCK_NAME = ".regionshards.lock"


class LockedError(RuntimeError):
    """Another build holds the output folder (a usage error: exit status 2)."""


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), to tell a live holder from a reused pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return started is None or _start_time(pid) in (None, started)


def _holder(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


class BuildLock:
    """``with BuildLock(out):`` holds the output folder for this process."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / LOCK_NAME
        self.stale: dict[str, Any] | None = None  # the holder of a stale lock taken over, to report

    def acquire(self) -> None:
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid()),
              "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _holder(self.path)
                if not self._is_stale(holder):
                    raise LockedError(
                        f"{self.path.parent} is being built by pid {holder.get('pid', '?')} on host "
                        f"{holder.get('host', '?')} since {holder.get('since', '?')}; wait for it, or remove "
                        f"{self.path} if that build is gone") from None
                self.stale = holder
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            return
        raise LockedError(f"{self.path}: could not take the lock (another build keeps taking it)")

    @staticmethod
    def _is_stale(holder: dict[str, Any]) -> bool:
        if holder.get("host") != socket.gethostname():
            return False
        pid = holder.get("pid")
        return isinstance(pid, int) and not _alive(pid, holder.get("started"))

    def release(self) -> None:
        if _holder(self.path).get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> BuildLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
