"""One build at a time per output folder: ``OUT/.regionshards.lock`` holds the builder's host and pid.

The lock is created with ``O_CREAT | O_EXCL`` (atomic on local and NFSv3+ file systems). A second build into the
same folder refuses, naming the holder. A lock left by a killed build is recognised as stale when it names this
host and a pid that no longer runs (or runs another program since: the start time recorded by the kernel
differs), and is then taken over; a lock from another host is never guessed at: the message says how to remove it.

On an object store (``s3://``) the lock is an object with the same fields plus a random token. Object stores
offer no create-if-absent through ``pyarrow.fs``, so the lock is check, write, read back: a build that finds a
live lock refuses, and of two builds that write the lock at once the one whose token does not read back
refuses. The guarantee is weaker than ``O_EXCL``: two drivers started within the same round trip can both pass.
It catches every other case (a second run minutes later, a rerun while the first still runs), and the staleness
rule is the same as on a local disk (this host and a dead pid: taken over; another host: remove it by hand).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from ..shards.store import Store

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


MAX_LOCK_BYTES = 64 << 10


def _remote_holder(store: Store) -> dict[str, Any] | None:
    """The lock object's holder; None when there is no lock object, {} when it is unreadable."""
    if store.problem(LOCK_NAME) == "missing":
        return None
    try:
        data = json.loads(store.read(LOCK_NAME, MAX_LOCK_BYTES))
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return None
    except ValueError:
        return {}


class BuildLock:
    """``with BuildLock(out):`` holds the output folder (a local folder or an object-store prefix) for this
    process."""

    def __init__(self, out: Path | Store) -> None:
        self.store = out if isinstance(out, Store) else Store(out)
        self.path = self.store.local / LOCK_NAME if self.store.local is not None else None
        self.where = self.store.join(LOCK_NAME)
        self.stale: dict[str, Any] | None = None  # the holder of a stale lock taken over, to report
        self.token = uuid.uuid4().hex

    def _me(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid()),
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "token": self.token}

    def _locked(self, holder: dict[str, Any]) -> LockedError:
        return LockedError(
            f"{self.store} is being built by pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since "
            f"{holder.get('since', '?')}; wait for it, or remove {self.where} if that build is gone")

    def acquire(self) -> None:
        if self.path is None:
            self._acquire_remote()
            return
        me = self._me()
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _holder(self.path)
                if not self._is_stale(holder):
                    raise self._locked(holder) from None
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

    def _acquire_remote(self) -> None:
        holder = _remote_holder(self.store)
        if holder is not None:
            if not self._is_stale(holder):
                raise self._locked(holder)
            self.stale = holder
        self.store.write(LOCK_NAME, json.dumps(self._me()).encode())
        holder = _remote_holder(self.store)  # read back: of two writers at once, the last one wins
        if holder is None or holder.get("token") != self.token:
            raise self._locked(holder or {})

    def release(self) -> None:
        if self.path is None:
            holder = _remote_holder(self.store)
            if holder is not None and holder.get("token") == self.token:
                self.store.delete(LOCK_NAME)
            return
        if _holder(self.path).get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> BuildLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            self.release()
        except OSError as failed:  # e.g. the object store went away: the build's own error comes first
            if exc is None:
                raise
            exc.add_note(f"the lock {self.where} could not be removed: {failed}")
