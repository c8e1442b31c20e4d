"""File plumbing: atomic writes (temporary name → fsync → rename → fsync the folder) and opening shard URLs."""

from __future__ import annotations

import os
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


def open_input(url: str | os.PathLike[str]) -> BinaryIO:
    """Open a shard or index for reading: local paths and ``file://`` with ``open``, other schemes
    (``s3://``, ``gs://``, ``hdfs://`` ...) through ``pyarrow.fs``."""
    path = local_path(url)
    if path is not None:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    from pyarrow import fs as pafs

    filesystem, inner = pafs.FileSystem.from_uri(os.fspath(url))
    stream: Any = filesystem.open_input_stream(inner)
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
