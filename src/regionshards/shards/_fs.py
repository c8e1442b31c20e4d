"""File plumbing: atomic writes (temporary name → fsync → rename → fsync the folder) and opening shard URLs."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import unquote, urlparse

T = TypeVar("T")
FILE_MODE = 0o644
TMP_SUFFIX = ".tmp"


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[BinaryIO], T]) -> T:
    """Call ``write(f)`` on a hidden temporary file beside ``path``, fsync it, rename it to ``path``.

    ``path`` therefore exists only complete. The temporary name is unique (``.<name>.<random>.tmp``), so two
    writers of the same file (a retried task) never write into each other's file; the last rename wins.
    On any error the temporary file is removed and the error propagates.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            result = write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)  # mkstemp makes 0600; shards are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return result


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``atomic_write`` of a bytes object."""
    atomic_write(path, lambda f: f.write(data))


def local_path(url: str | os.PathLike[str]) -> Path | None:
    """The local path of a plain path or ``file://`` URL, None for other URL schemes."""
    text = os.fspath(url)
    parsed = urlparse(text)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if len(parsed.scheme) <= 1:  # no scheme, or a Windows drive letter
        return Path(text)
    return None


class NotARegularFile(OSError):
    """A local input that is not a regular file (a FIFO, a device, a folder, a socket, or a symlink to one)."""


def file_kind(mode: int) -> str:
    """What a non-regular ``st_mode`` is, in words ("a FIFO", "a folder" ...)."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a local file for reading, refusing anything but a regular file before a byte is read.

    The file is opened with ``O_NONBLOCK`` (opening a FIFO with no writer would otherwise block forever) and
    checked with ``fstat`` on the open descriptor, so a symlink to ``/dev/zero`` or a FIFO never hangs or
    streams forever, and no rename between check and read can swap the file.

    Raises:
        NotARegularFile: naming the path and what it is; FileNotFoundError and other OSErrors as ``open``.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(f"{os.fspath(path)}: {file_kind(mode)}, not a regular file; "
                                  "only regular files are read")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be read as a regular file (``"missing"`` or what it is), None when it can."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({type(exc).__name__}: {exc})"
    return None if stat.S_ISREG(mode) else file_kind(mode)


def read_regular(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of a small local regular file (a manifest, a summary), refusing files over ``max_bytes``.

    Raises:
        NotARegularFile, FileNotFoundError, OSError; ValueError naming the file when it is too large.
    """
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise ValueError(f"{os.fspath(path)}: {size} bytes > limit of {max_bytes}")
        return read_capped(f, max_bytes, os.fspath(path))


def read_capped(f: BinaryIO, max_bytes: int, name: str) -> bytes:
    """Read ``f`` to its end in 1 MiB steps, refusing more than ``max_bytes`` (``read(n)`` would allocate n bytes
    up front, whatever the file holds).

    Raises:
        ValueError: naming ``name`` when the stream holds more than ``max_bytes``.
    """
    chunks, total = [], 0
    while chunk := f.read(min(1 << 20, max_bytes + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise ValueError(f"{name}: more than {max_bytes} bytes")
    return b"".join(chunks)


def open_input(url: str | os.PathLike[str]) -> BinaryIO:
    """Open a shard or index for reading: local paths and ``file://`` with ``open_regular`` (regular files only),
    other schemes (``s3://``, ``gs://``, ``hdfs://`` ...) through ``pyarrow.fs`` (objects only, ``store.Store``)."""
    path = local_path(url)
    if path is not None:
        return open_regular(path)
    from .store import Store

    folder, _, name = os.fspath(url).rstrip("/").rpartition("/")
    stream: Any = Store(folder).open(name)[0]  # objects only: a prefix ("folder") is refused
    return stream


def join_url(base: str, name: str) -> str:
    """``name`` inside the folder ``base`` (a local folder or a URL ending in a folder)."""
    path = local_path(base)
    if path is not None:
        return str(path / name)
    return base.rstrip("/") + "/" + name


def parent_url(url: str) -> str:
    """The folder containing ``url``."""
    path = local_path(url)
    if path is not None:
        return str(path.parent)
    return url.rstrip("/").rsplit("/", 1)[0]
