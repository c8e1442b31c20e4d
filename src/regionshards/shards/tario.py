"""Deterministic tar writing and strict, safe tar reading.

Writing: POSIX ustar headers only (no PAX or GNU extensions; member names are flat ASCII ``<key>.<field>`` of
at most 100 bytes, so none are needed), regular files with mode 0644, ``mtime=0``, uid/gid 0, user and group
``root``, members in the order given (the shard writer sorts them), two zero blocks, then zero padding to a
10240-byte record like GNU tar and Python's ``tarfile``. The header bytes equal ``tarfile``'s for the same
fields (checked in tests), so every tar reader understands them.

Reading: every header checksum is verified and a damaged header is an error, not an early end of the archive
(``tarfile`` in stream mode treats a bad header after the first as the end and silently drops the rest).
Nothing is ever extracted to disk. Member-level problems (names with ``..`` or ``/``, absolute names, links,
devices, directories, oversize members, pickle-capable extensions) come back as ``Member`` entries carrying a
``ShardError`` and no data, so the caller decides to raise or to skip and record; structural damage
(truncation, bad checksum) raises ``ShardError`` because nothing after it can be trusted.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from .keys import is_valid_key

BLOCK = 512
RECORD = 20 * BLOCK
USER = GROUP = "root"
FILE_MODE = 0o644
MAX_NAME_BYTES = 100
MAX_USTAR_SIZE = 8**11 - 1  # 11 octal digits
DEFAULT_MAX_MEMBER_BYTES = 1 << 30
MAX_EXTENSION_HEADER_BYTES = 1 << 20  # PAX / GNU long-name data we are willing to read
# Extensions whose usual decoders (webdataset's among them) unpickle: refused on sight, whatever the content.
PICKLE_EXTENSIONS = frozenset({"pyd", "pkl", "pickle", "pth", "pt"})
MAX_FIELD_LENGTH = 16
_FIELD_RE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")

_ZERO_BLOCK = bytes(BLOCK)
# Constant header parts after the checksum: typeflag "0", empty linkname, magic, version, user, group, devices.
_HEADER_TAIL = (
    b"0"
    + bytes(100)
    + b"ustar\x0000"
    + USER.encode().ljust(32, b"\0")
    + GROUP.encode().ljust(32, b"\0")
    + bytes(16)  # device numbers left empty for regular files, as tarfile and GNU tar write them
    + bytes(155 + 12)
)
_HEADER_MIDDLE = b"%07o\x00" % FILE_MODE + b"0000000\x00" * 2  # mode, uid, gid
_MTIME = b"00000000000\x00"


class ShardError(ValueError):
    """A problem in a shard; ``code`` is machine-readable, ``shard`` and ``member`` say where.

    ``ShardError(message)`` (one argument) makes one from its text alone — how an exception that crossed a process
    boundary is re-created (torch's DataLoader re-raises a worker's error as ``type(message)``): ``code`` and
    ``shard`` are then empty, ``detail`` is the message.
    """

    def __init__(self, code: str, shard: str | None = None, member: str | None = None,
                 detail: str | None = None) -> None:
        if shard is None and detail is None:
            super().__init__(code)
            self.code, self.shard, self.member, self.detail = "", "", member, code
            return
        shard = shard or ""
        where = f"{shard}: {member}" if member is not None else shard
        super().__init__(f"{where}: {code}: {detail}")
        self.code = code
        self.shard = shard
        self.member = member
        self.detail = detail or ""

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle the fields, not the formatted message (which ``__init__`` would take for a message-only error)
        if self.code:
            return type(self), (self.code, self.shard, self.member, self.detail)
        return type(self), (self.detail,)


def ustar_header(name: str, size: int) -> bytes:
    """The 512-byte ustar header of a regular file ``name`` of ``size`` bytes (mtime 0, root:root, 0644)."""
    raw = name.encode("ascii")
    if not raw or len(raw) > MAX_NAME_BYTES:
        raise ValueError(f"tar member name {name!r} must be 1..{MAX_NAME_BYTES} ASCII bytes")
    if not 0 <= size <= MAX_USTAR_SIZE:
        raise ValueError(f"tar member {name!r}: size {size} does not fit a ustar header")
    head = raw.ljust(100, b"\0") + _HEADER_MIDDLE + b"%011o\x00" % size + _MTIME
    # The checksum is computed with its own field as eight spaces.
    checksum = sum(head) + 8 * 0x20 + sum(_HEADER_TAIL)
    return head + b"%06o\x00 " % checksum + _HEADER_TAIL


class TarStreamWriter:
    """Append regular-file members to a binary stream as ustar, tracking offsets and the SHA-256 of all bytes.

    ``add`` returns the byte offset of the member's data; ``close`` writes the end-of-archive blocks and the
    record padding and returns ``(total bytes, sha256 hex)``. The stream is not closed.
    """

    def __init__(self, fileobj: BinaryIO) -> None:
        self._f = fileobj
        self._hash = hashlib.sha256()
        self.offset = 0

    def _write(self, data: bytes) -> None:
        self._f.write(data)
        self._hash.update(data)
        self.offset += len(data)

    def add(self, name: str, data: bytes) -> int:
        self._write(ustar_header(name, len(data)))
        start = self.offset
        self._write(data)
        pad = -len(data) % BLOCK
        if pad:
            self._write(bytes(pad))
        return start

    def close(self) -> tuple[int, str]:
        self._write(_ZERO_BLOCK * 2)
        pad = -self.offset % RECORD
        if pad:
            self._write(bytes(pad))
        return self.offset, self._hash.hexdigest()


@dataclass(frozen=True)
class Member:
    """One tar member: ``data`` is the content of an accepted regular file, ``None`` when ``error`` is set.

    ``header_offset`` is the offset of its (first) header, ``data_offset`` of its content, both from the
    start of the shard.
    """

    name: str
    header_offset: int
    data_offset: int
    size: int
    data: bytes | None
    error: ShardError | None = None


def split_name(name: str) -> tuple[str, str]:
    """``"<key>.<field>"`` → ``(key, field)``, split at the first dot (webdataset's rule for flat names)."""
    key, _, field = name.partition(".")
    return key, field


def is_valid_field(field: str) -> bool:
    """True for 1..16 characters of dot-separated ``[A-Za-z0-9_-]`` words with no pickle-capable extension."""
    return (
        len(field) <= MAX_FIELD_LENGTH
        and _FIELD_RE.fullmatch(field) is not None
        and not PICKLE_EXTENSIONS.intersection(p.lower() for p in field.split("."))
    )


def check_member_name(name: str, shard: str) -> ShardError | None:
    """Why a member name is refused (a ``ShardError``), or None when it is a flat ``<key>.<field>`` name."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return ShardError("absolute-name", shard, name, "absolute member name")
    if ".." in parts:
        return ShardError("path-traversal", shard, name, "member name contains a '..' component")
    if len(parts) > 1:
        return ShardError("bad-name", shard, name, "member names are flat <key>.<field>, without directories")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return ShardError("bad-name", shard, name, "control character in member name")
    key, field = split_name(name)
    if PICKLE_EXTENSIONS.intersection(p.lower() for p in field.split(".")):
        return ShardError("pickle-extension", shard, name, "pickle-capable extension refused; nothing is unpickled")
    if not is_valid_key(key) or not is_valid_field(field):
        return ShardError("bad-name", shard, name, "not a <key>.<field> name with a valid key and field")
    return None


def _number(field: bytes) -> int:
    """A ustar numeric field: octal ASCII (NUL/space terminated) or GNU base-256."""
    if field[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * (len(field) - 1))) if field[:1] == b"\xff" else value
    text = field.split(b"\0", 1)[0].strip(b" ")
    return int(text, 8) if text else 0


def _pax_records(data: bytes) -> dict[str, str]:
    """Parse PAX extended-header records ``"<len> <key>=<value>\\n"``."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        if length <= 0 or pos + length > len(data):
            raise ValueError("bad PAX record length")
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        out[key.decode("utf-8")] = value.decode("utf-8")
        pos += length
    return out


class _Stream:
    """Reads exact byte counts, counting the offset and raising ``truncated`` at a premature end."""

    def __init__(self, fileobj: BinaryIO, shard: str) -> None:
        self._f = fileobj
        self.shard = shard
        self.offset = 0

    def read(self, n: int, member: str | None) -> bytes:
        data = self._f.read(n) if n else b""
        while len(data) < n:  # non-file streams may return short reads before the end
            more = self._f.read(n - len(data))
            if not more:
                raise ShardError(
                    "truncated", self.shard, member,
                    f"shard ends at byte {self.offset + len(data)}, inside {n} bytes expected at {self.offset}",
                )
            data += more
        self.offset += n
        return data

    def skip(self, n: int, member: str | None) -> None:
        while n > 0:
            step = min(n, 1 << 20)
            self.read(step, member)
            n -= step

    def check_end(self, previous: str | None) -> None:
        """After the first zero block: everything to the end of the stream must be zeros.

        A zeroed header in the middle of a shard looks like the end-of-archive marker; the members after it
        would be lost without a word, so non-zero bytes after the marker are an error (``data-after-end``).
        """
        marker = self.offset - BLOCK
        while chunk := self._f.read(1 << 20):
            zeros = len(chunk) - len(chunk.lstrip(b"\0"))
            if zeros != len(chunk):
                at = self.offset + zeros
                after = f"after member {previous!r}" if previous else "at the start"
                raise ShardError("data-after-end", self.shard, previous,
                                 f"non-zero byte at {at} after the end-of-archive marker at {marker} {after} "
                                 "(a zeroed header, or data appended to the archive)")
            self.offset += len(chunk)

    def read_header(self, previous: str | None) -> bytes | None:
        """The next header block, or None at the end-of-archive marker."""
        start = self.offset
        block = self._f.read(BLOCK)
        while 0 < len(block) < BLOCK:  # short reads from non-file streams
            more = self._f.read(BLOCK - len(block))
            if not more:
                break
            block += more
        if len(block) < BLOCK:
            where = f"after member {previous!r}" if previous else "at the start"
            raise ShardError("truncated", self.shard, previous, f"shard ends at byte {start + len(block)} {where}, "
                             "without the end-of-archive marker")
        self.offset += BLOCK
        if block == _ZERO_BLOCK:
            return None
        try:
            stored = _number(block[148:156]) if block[148:156].strip(b"\0 ") else -1
        except ValueError:
            stored = -1
        unsigned = sum(block) - sum(block[148:156]) + 8 * 0x20
        if stored != unsigned and stored != _signed_checksum(block):
            raise ShardError("bad-header", self.shard, previous,
                             f"tar header at byte {start} fails its checksum (damaged or not a tar file)")
        return block


def _signed_checksum(block: bytes) -> int:
    """The checksum some old tars wrote, summing the bytes as signed chars (accepted like ``tarfile`` does)."""
    signed = [b - 256 if b > 127 else b for b in block[:148] + b" " * 8 + block[156:]]
    return sum(signed)


def _header_fields(block: bytes) -> tuple[str, int, bytes]:
    name = block[:100].split(b"\0", 1)[0]
    if block[257:262] == b"ustar":
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    # Undecodable bytes become visible escapes: the name is only reported (and refused), never used as a path.
    return name.decode("utf-8", "backslashreplace"), _number(block[124:136]), block[156:157]


_KIND_ERRORS = {
    b"1": ("link", "hard link member"),
    b"2": ("link", "symbolic link member"),
    b"3": ("device", "character device member"),
    b"4": ("device", "block device member"),
    b"5": ("not-regular-file", "directory member"),
    b"6": ("not-regular-file", "FIFO member"),
}


def iter_members(
    fileobj: BinaryIO, shard: str, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES
) -> Iterator[Member]:
    """Yield every member of a tar stream in order, checking each header; never extracts anything.

    Regular files with an acceptable name and size come with their data; any other member comes with an
    ``error`` (codes: absolute-name, path-traversal, bad-name, pickle-extension, link, device,
    not-regular-file, oversize) and its data skipped.

    Raises:
        ShardError: ``truncated`` (the stream ends inside a member or before the end-of-archive marker),
            ``bad-header`` (checksum or field damage) or ``data-after-end`` (a non-zero byte after the first
            zero block: a zeroed header or appended data), naming the shard and the last good member.
    """
    stream = _Stream(fileobj, shard)
    previous: str | None = None
    pending: dict[str, str] = {}
    while True:
        header_offset = stream.offset
        block = stream.read_header(previous)
        if block is None:
            stream.check_end(previous)
            return
        try:
            name, size, kind = _header_fields(block)
        except (ValueError, UnicodeDecodeError):
            raise ShardError("bad-header", shard, previous, f"unreadable tar header at byte {header_offset}") from None
        if kind in (b"x", b"g", b"L", b"K"):
            if not 0 <= size <= MAX_EXTENSION_HEADER_BYTES:
                raise ShardError("bad-header", shard, previous, f"extension header of {size} bytes at {header_offset}")
            data = stream.read(size, previous)
            stream.skip(-size % BLOCK, previous)
            try:
                if kind == b"x":
                    pending.update(_pax_records(data))
                elif kind == b"L":
                    pending["path"] = data.split(b"\0", 1)[0].decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                raise ShardError("bad-header", shard, previous, f"malformed extension header at {header_offset}") \
                    from None
            continue  # global headers ('g') and long link names ('K') carry nothing we use
        name = pending.pop("path", name)
        if "size" in pending:
            try:
                size = int(pending.pop("size"))
            except ValueError:
                raise ShardError("bad-header", shard, name, "malformed PAX size") from None
        pending.clear()
        if size < 0:
            raise ShardError("bad-header", shard, name, f"negative member size at byte {header_offset}")
        data_offset = stream.offset
        error = check_member_name(name, shard)
        if kind in _KIND_ERRORS:
            code, what = _KIND_ERRORS[kind]
            error = ShardError(code, shard, name, f"{what} refused; only regular files are read")
        elif kind not in (b"0", b"\0", b"7"):
            error = ShardError("not-regular-file", shard, name, f"tar member type {kind!r} refused")
        elif error is None and size > max_member_bytes:
            error = ShardError("oversize", shard, name, f"{size} bytes > limit of {max_member_bytes}")
        if error is not None:
            # Like tarfile: links, devices, directories and FIFOs have no data blocks whatever their size field.
            skipped = 0 if kind in _KIND_ERRORS else size + (-size % BLOCK)
            stream.skip(skipped, name)
            yield Member(name, header_offset, data_offset, size, None, error)
        else:
            data = stream.read(size, name)
            stream.skip(-size % BLOCK, name)
            yield Member(name, header_offset, data_offset, size, data)
        previous = name
