"""A dataset folder wherever it lives: a local folder, or a prefix in an object store (``s3://bucket/prefix``,
``gs://``, ... anything ``pyarrow.fs.FileSystem.from_uri`` opens).

The one seam every writer and reader of a dataset folder goes through (shard writer, manifest, reader, verify,
the builder's resume and lock, the reports). Names inside a folder are single components (no ``/``, never
``.`` or ``..``), so a name read from a manifest or an index cannot leave its folder.

- **Local**: today's path: atomic writes (temporary name, fsync, rename, fsync of the folder); only regular files
  are opened (``O_NONBLOCK`` + ``fstat``), so FIFOs and devices never hang or stream forever.
- **Object store**: there is no rename; a file is written as one object, whole, from memory (one
  ``open_output_stream`` per object, closed once every byte is written), so a reader sees either the old
  object or the new one. Writers write the manifest last, so a folder holding ``manifest.json`` is complete.
  Only objects (``FileType.File``) are read, their size is checked (from the listing) before anything is read,
  and listing is ``get_file_info(FileSelector)`` of the prefix.

Credentials and endpoint of an object store come from the environment, as ``pyarrow.fs`` reads them (for S3:
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``~/.aws/credentials``, instance
metadata; ``AWS_REGION`` or ``AWS_DEFAULT_REGION``; ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for an
S3-compatible server). Query parameters in the URL are not supported: the environment configures the store.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from ._fs import atomic_write, file_problem, local_path, open_regular, read_capped, read_regular

T = TypeVar("T")


def check_name(name: str) -> str:
    """``name`` when it is one path component (not empty, ``.``, ``..``, no ``/`` or ``\\``); else ValueError."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"{name!r} is not a plain file name inside a dataset folder")
    return name


# What configures a filesystem besides its URL: a filesystem is cached per URL and these variables' values.
_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE", "GOOGLE_APPLICATION_CREDENTIALS")


def _filesystem(url: str) -> tuple[Any, str]:
    return _cached_filesystem(url, tuple(os.environ.get(k) for k in _ENV))


@functools.lru_cache(maxsize=32)
def _cached_filesystem(url: str, env: tuple[str | None, ...]) -> tuple[Any, str]:
    from pyarrow import fs as pafs

    if _cached_filesystem.cache_info().currsize == 0:
        # pyarrow finalises its S3 client at exit; a filesystem still alive then, or the SDK's threads torn down
        # by static destructors, aborts the process now and then ("terminate called without an active
        # exception"). atexit runs last-registered first: this runs before pyarrow's own handler.
        atexit.register(_release_filesystems)
    return pafs.FileSystem.from_uri(url)


def _release_filesystems() -> None:
    """Drop every cached filesystem, collect what referenced them, then finalise S3 while the interpreter (and
    the SDK's threads) are still whole; pyarrow's own finaliser then finds nothing left to do."""
    import gc

    from pyarrow import fs as pafs

    _cached_filesystem.cache_clear()
    gc.collect()
    finalize = getattr(pafs, "finalize_s3", None)
    if finalize is not None:
        finalize()


def resolve(url: str) -> tuple[Any, str]:
    """``(pyarrow FileSystem, path inside it)`` of a URL that is not local (one filesystem object per URL)."""
    if "?" in url or "#" in url:
        raise ValueError(f"{url}: query parameters are not supported in a dataset URL; configure the store with "
                         "the environment (AWS_ENDPOINT_URL, AWS_REGION ...)")
    base, sep, name = url.rstrip("/").rpartition("/")
    if not sep or base.endswith(":/"):
        return _filesystem(url)
    filesystem, inner = _filesystem(base)  # the folder's filesystem, reused for every name in it
    return filesystem, f"{inner}/{name}"


def is_remote(url: str | os.PathLike[str]) -> bool:
    """True for object-store URLs (``s3://``...), False for plain paths and ``file://``."""
    return local_path(url) is None


def _kind(info: Any) -> str | None:
    from pyarrow import fs as pafs

    if info.type == pafs.FileType.NotFound:
        return "missing"
    if info.type == pafs.FileType.File:
        return None
    return "a folder (prefix)" if info.type == pafs.FileType.Directory else "not an object"


class Store:
    """A dataset folder: ``Store("out/")``, ``Store("s3://bucket/run1")``. Names are single components."""

    def __init__(self, url: str | os.PathLike[str] | Store) -> None:
        text = url.url if isinstance(url, Store) else os.fspath(url)
        self.local: Path | None = local_path(text)
        self.url = str(self.local) if self.local is not None else text.rstrip("/")
        if self.local is None:
            self.fs, self.root = resolve(self.url)

    def __str__(self) -> str:
        return self.url

    def join(self, name: str) -> str:
        """The path or URL of ``name`` in this folder."""
        check_name(name)
        return str(self.local / name) if self.local is not None else f"{self.url}/{name}"

    def _inner(self, name: str) -> str:
        return f"{self.root}/{check_name(name)}"

    def folder_problem(self) -> str | None:
        """None when the folder exists (a prefix with objects or a bucket), else why not (``"missing"`` ...)."""
        if self.local is not None:
            if self.local.is_dir():
                return None
            return "missing" if not self.local.exists() else "not a folder"
        from pyarrow import fs as pafs

        info = self.fs.get_file_info(self.root)
        return None if info.type == pafs.FileType.Directory else ("missing" if info.type == pafs.FileType.NotFound
                                                                   else "an object, not a folder")

    def make(self) -> None:
        """Create the folder (local); on an object store check that its bucket exists (prefixes need no creating).

        Raises:
            FileNotFoundError: naming the bucket when it does not exist (it is never created).
        """
        if self.local is not None:
            self.local.mkdir(parents=True, exist_ok=True)
            return
        from pyarrow import fs as pafs

        bucket = self.root.split("/", 1)[0]
        if self.fs.get_file_info(bucket).type != pafs.FileType.Directory:
            raise FileNotFoundError(f"{self.url}: bucket {bucket!r} does not exist (create it first)")

    def names(self) -> list[str]:
        """The sorted names directly inside the folder (files and sub-folders; empty when it does not exist)."""
        if self.local is not None:
            return sorted(os.listdir(self.local)) if self.local.is_dir() else []
        from pyarrow import fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True, recursive=False))
        return sorted(info.base_name for info in infos)

    def problem(self, name: str) -> str | None:
        """Why ``name`` cannot be read as a regular file/object (``"missing"`` or what it is), None when it can."""
        if self.local is not None:
            return file_problem(self.local / check_name(name))
        return _kind(self.fs.get_file_info(self._inner(name)))

    def size(self, name: str) -> int:
        """Bytes of the file or object ``name`` (FileNotFoundError when absent)."""
        if self.local is not None:
            return (self.local / check_name(name)).stat().st_size
        info = self.fs.get_file_info(self._inner(name))
        if _kind(info) is not None:
            raise FileNotFoundError(f"{self.join(name)}: {_kind(info)}")
        return int(info.size)

    def open(self, name: str) -> tuple[BinaryIO, int]:
        """``(stream, size)`` of a regular file/object, refusing anything else before a byte is read.

        Raises:
            NotARegularFile (local FIFOs, devices ...), FileNotFoundError, OSError.
        """
        if self.local is not None:
            f = open_regular(self.local / check_name(name))
            return f, os.fstat(f.fileno()).st_size
        from ._fs import NotARegularFile

        info = self.fs.get_file_info(self._inner(name))
        kind = _kind(info)
        if kind == "missing":
            raise FileNotFoundError(f"{self.join(name)}: no such object")
        if kind is not None:
            raise NotARegularFile(f"{self.join(name)}: {kind}; only objects are read")
        return self.fs.open_input_stream(self._inner(name)), int(info.size)

    def read(self, name: str, max_bytes: int) -> bytes:
        """The bytes of a small file/object, refusing more than ``max_bytes`` before reading (ValueError)."""
        if self.local is not None:
            return read_regular(self.local / check_name(name), max_bytes)
        f, size = self.open(name)
        with f:
            if size > max_bytes:
                raise ValueError(f"{self.join(name)}: {size} bytes > limit of {max_bytes}")
            return read_capped(f, max_bytes, self.join(name))

    def write_with(self, name: str, write: Callable[[BinaryIO], T]) -> T:
        """Call ``write(f)`` and store what it wrote as ``name``: atomically (local) or as one whole object."""
        if self.local is not None:
            return atomic_write(self.local / check_name(name), write)
        buffer = io.BytesIO()
        result = write(buffer)
        self.write(name, buffer.getbuffer())
        return result

    def write(self, name: str, data: bytes | memoryview) -> None:
        """Store ``data`` as ``name`` (atomic rename locally; one whole object on an object store)."""
        if self.local is not None:
            atomic_write(self.local / check_name(name), lambda f: f.write(data))
            return
        # One write of the whole object, then close: the object appears on close (PutObject or the completion of
        # the multipart upload). Should the upload fail midway, the error propagates; an object left behind is
        # never trusted (resume and verify check its size and sha256, the manifest is written last).
        with self.fs.open_output_stream(self._inner(name)) as out:
            out.write(data)

    def delete(self, name: str) -> None:
        """Remove ``name`` if present."""
        if self.local is not None:
            (self.local / check_name(name)).unlink(missing_ok=True)
            return
        if self.problem(name) != "missing":
            self.fs.delete_file(self._inner(name))


def sha256_stream(f: Any) -> str:
    """SHA-256 hex of a stream read to its end in 1 MiB steps (a local file or a pyarrow stream)."""
    if hasattr(f, "fileno"):
        try:
            f.fileno()
            return hashlib.file_digest(f, "sha256").hexdigest()
        except (OSError, io.UnsupportedOperation):
            pass
    h = hashlib.sha256()
    while chunk := f.read(1 << 20):
        h.update(chunk)
    return h.hexdigest()
