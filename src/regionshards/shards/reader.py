"""Safe shard reading: a dataset from a folder, a manifest or a list of shard URLs, as plain dict samples.

Samples are WebDataset-shaped dicts: ``{"__key__": key, "__url__": shard, "json": dict, "jpg": bytes}``. Only
JSON is parsed (``json.loads``); nothing is unpickled, and members with pickle-capable extensions are refused
before their bytes are read. Member checks are ``tario.iter_members``'s (names, types, sizes, header
checksums, nothing but zeros after the end-of-archive marker); on top, a key may appear in one run of members
only and a field once per sample, and every sample passes the validating parser (``validate.check_sample``:
JSON limits, schema, sizes against the image header and a pixel cap, RLE run sums, boxes) before it is
yielded. Local shards must be regular files; a shard read to its end short of its manifest count is an error.

Errors are ``ShardError`` naming the shard and member. Without a handler the first one is raised. With a
handler (``Recorder()`` or any callable taking the error) it is called and the reader skips: a refused member
or unparsable JSON skips that sample, structural damage (truncation, a bad header, a sha256 mismatch, an
unreadable file) skips the rest of that shard. A handler that raises stops the iteration.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa

from ._fs import NotARegularFile, join_url, local_path, open_input, parent_url, read_capped
from .index import read_index
from .manifest import MANIFEST_NAME, ManifestError, read_manifest
from .sample import JSON_FIELD, is_json_field, members_to_sample
from .store import Store
from .tario import DEFAULT_MAX_MEMBER_BYTES, Member, ShardError, iter_members, split_name
from .validate import DEFAULT_LIMITS, Limits, SampleError, check_sample, dataset_limits

Handler = Callable[[ShardError], Any]


class Recorder:
    """A handler that records every error (``errors``) so the reader skips and goes on."""

    def __init__(self) -> None:
        self.errors: list[ShardError] = []

    def __call__(self, error: ShardError) -> None:
        self.errors.append(error)


def _raise(error: ShardError) -> None:
    raise error


def shard_sha256(url: str) -> str:
    """SHA-256 hex of a shard's bytes."""
    with open_input(url) as f:
        if hasattr(f, "readinto"):
            return hashlib.file_digest(f, "sha256").hexdigest()
        h = hashlib.sha256()
        while chunk := f.read(1 << 20):
            h.update(chunk)
        return h.hexdigest()


def iter_sample_members(
    fileobj: Any, url: str, report: Handler, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES
) -> Iterator[tuple[str, list[Member]]]:
    """Group a shard's accepted members into samples: ``(key, [Member, ...])`` per run of one key.

    Refused members, repeated keys and repeated fields are passed to ``report`` and their sample is left out.
    Structural ``ShardError``s propagate; the sample being read is yielded first only when the damage lies in a
    member of the next key (so the sample is known to be whole), else it is dropped.
    """
    seen: set[str] = set()
    key: str | None = None
    group: list[Member] = []
    poisoned = False
    members = iter_members(fileobj, url, max_member_bytes)
    while True:
        try:
            member = next(members, None)
        except ShardError as exc:
            # Damage inside a member of the next key, or after the last member read (data after a zero block),
            # leaves the current sample as read: keep it (the sample check still refuses it if incomplete).
            after = exc.code == "data-after-end" or (exc.member is not None and split_name(exc.member)[0] != key)
            if after and key is not None and group and not poisoned:
                yield key, group
            raise
        if member is None:
            break
        member_key, field = split_name(member.name)
        if member_key != key:
            if key is not None and group and not poisoned:
                yield key, group
            key, group, poisoned = member_key, [], False
            if member.error is None and member_key in seen:
                poisoned = True
                report(ShardError("duplicate-key", url, member.name, f"key {member_key!r} appears in two places"))
            if member.error is None:  # refused names (e.g. "../x") are reported once, as what they are
                seen.add(member_key)
        if member.error is not None:
            poisoned = True
            report(member.error)
        elif any(split_name(m.name)[1] == field for m in group):
            poisoned = True
            report(ShardError("duplicate-member", url, member.name, "the same member name appears twice"))
        group.append(member)
    if key is not None and group and not poisoned:
        yield key, group


def _sample(key: str, members: list[Member], url: str, parse_json: bool, validate: bool, limits: Limits,
            config_hash: str | None) -> dict[str, Any] | ShardError:
    """One sample dict from its members, or the ``ShardError`` (naming shard and member) that refuses it."""
    return _fields_sample(key, {split_name(m.name)[1]: m.data or b"" for m in members}, url, parse_json, validate,
                          limits, config_hash)


def _fields_sample(key: str, fields: dict[str, bytes], url: str, parse_json: bool, validate: bool, limits: Limits,
                   config_hash: str | None) -> dict[str, Any] | ShardError:
    if validate:
        meta, problems = check_sample(key, fields, limits, config_hash)
        if problems:
            p = problems[0]
            return ShardError(p.code, url, f"{key}.{p.field}", p.message)
        sample: dict[str, Any] = {"__key__": key, **fields}
        if parse_json:
            sample[JSON_FIELD] = meta
        return sample
    try:
        return members_to_sample(key, list(fields.items()), parse_json, limits)
    except SampleError as exc:
        member = next((f"{key}.{f}" for f in fields if is_json_field(f)), key)
        return ShardError(exc.code, url, member, str(exc))


def validated_sample(sample: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS,
                     config_hash: str | None = None) -> dict[str, Any]:
    """A sample read with ``validate=False, parse_json=False``, put through the validating parser afterwards.

    Returns what ``iter_shard`` (``validate=True, parse_json=True``) yields for the same members: a new dict
    whose ``json`` is the trusted parsed JSON. For readers that hold many samples but use few of them (each of
    the trainer's loader workers reads its rank's whole stream and decodes every W-th batch): the bytes are
    validated, and parsed, only when they are used.

    Raises:
        ShardError: the one ``iter_shard`` raises for the sample (code, shard, member).
    """
    key, url = sample["__key__"], str(sample.get("__url__") or "")
    fields = {f: v for f, v in sample.items() if not f.startswith("__")}
    checked = _fields_sample(key, fields, url, True, True, limits, config_hash)
    if isinstance(checked, ShardError):
        raise checked
    checked["__url__"] = url
    return checked


def iter_shard(
    url: str | os.PathLike[str],
    *,
    handler: Handler | None = None,
    parse_json: bool = True,
    expected_sha256: str | None = None,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    validate: bool = True,
    limits: Limits = DEFAULT_LIMITS,
    expected_samples: int | None = None,
    config_hash: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the samples of one shard (see the module docstring for errors and ``handler``).

    Args:
        url: local path, ``file://`` URL or any ``pyarrow.fs`` URI of a ``.tar`` shard (a local one must be a
            regular file: FIFOs, devices and symlinks to them are refused, code ``not-regular-file``).
        parse_json: False keeps JSON members as bytes (they are still parsed once to be validated).
        expected_sha256: when given, the whole shard is hashed first and nothing is yielded on a mismatch
            (one extra read of the shard).
        max_member_bytes: members larger than this are refused without being read.
        validate: True (the default) checks every sample with ``validate.check_sample`` (schema, sizes against
            the image header and ``limits``, run sums, boxes) and refuses it with the problem's code; False
            reads any WebDataset-style sample, applying only the JSON limits.
        expected_samples: the manifest's sample count; reading to the end of the shard with a different count
            (and no other error) is an error, ``count-mismatch``.
        config_hash: when given, every sample's ``config_hash`` must equal it.
    """
    url = os.fspath(url)
    reported: set[int] = set()

    def report(error: ShardError) -> None:
        reported.add(id(error))  # so an error re-raised by the handler is not handled twice
        (handler or _raise)(error)

    read = 0
    try:
        if expected_sha256 is not None:
            actual = shard_sha256(url)
            if actual != expected_sha256:
                report(ShardError("sha256-mismatch", url, None, f"sha256 {actual}, expected {expected_sha256}"))
                return
        with open_input(url) as f:
            for key, members in iter_sample_members(f, url, report, max_member_bytes):
                sample = _sample(key, members, url, parse_json, validate, limits, config_hash)
                if isinstance(sample, ShardError):
                    report(sample)
                    continue
                sample["__url__"] = url
                read += 1
                yield sample
    except ShardError as exc:
        if id(exc) in reported:
            raise
        report(exc)
    except NotARegularFile as exc:
        report(ShardError("not-regular-file", url, None, str(exc)))
    except OSError as exc:
        report(ShardError("unreadable", url, None, f"{type(exc).__name__}: {exc}"))
    if expected_samples is not None and read != expected_samples and not reported:
        report(ShardError("count-mismatch", url, None,
                          f"read {read} samples to the end of the shard, the manifest promises {expected_samples}"))


class ShardDataset:
    """An iterable over the samples of a dataset's shards, in shard order then sample order.

    ``source`` is a dataset folder (its ``manifest.json`` is read and checked; an object-store URL such as
    ``s3://bucket/out`` not ending in ``.json`` or ``.tar`` is a folder), a manifest path/URL, a single
    ``.tar`` shard, or a list of shard paths/URLs (no manifest: sha256 cannot be checked). Iterating twice
    reads the shards twice; nothing is cached.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        verify_sha256: bool = False,
        handler: Handler | None = None,
        parse_json: bool = True,
        max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
        validate: bool = True,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.manifest: dict[str, Any] | None = None
        self._sha256: dict[str, str] = {}
        self._samples: dict[str, int] = {}
        self._index_urls: list[str] = []
        if isinstance(source, str | os.PathLike):
            self._open_single(os.fspath(source))
        else:
            self.shards = [os.fspath(u) for u in source]
            self._index_urls = [index_url(u) for u in self.shards]
        if verify_sha256 and self.manifest is None:
            raise ValueError("verify_sha256 needs a manifest: open the dataset folder or its manifest.json")
        self.verify_sha256 = verify_sha256
        self.handler = handler
        self.parse_json = parse_json
        self.max_member_bytes = max_member_bytes
        self.validate = validate
        self.limits = limits

    def _open_single(self, source: str) -> None:
        path = local_path(source)
        remote_folder = path is None and not source.endswith((".json", ".tar"))
        if (path is not None and path.is_dir()) or remote_folder:
            folder = Store(source)
            manifest_url = folder.join(MANIFEST_NAME)
            problem = folder.problem(MANIFEST_NAME)
            if problem == "missing":
                raise FileNotFoundError(f"{source}: no {MANIFEST_NAME} (an unfinished build writes it last)")
            if problem is not None:
                raise ManifestError(f"{manifest_url}: {problem}, not a regular file; only regular files are read")
        elif source.endswith(".json"):
            manifest_url = source
        else:
            self.shards = [source]
            self._index_urls = [index_url(source)]
            return
        self.manifest = read_manifest(manifest_url)
        base = parent_url(manifest_url)
        self.shards = [join_url(base, s["name"]) for s in self.manifest["shards"]]
        self._index_urls = [join_url(base, s["index"]) for s in self.manifest["shards"]]
        self._sha256 = {join_url(base, s["name"]): s["sha256"] for s in self.manifest["shards"]}
        self._samples = {join_url(base, s["name"]): int(s["samples"]) for s in self.manifest["shards"]}

    @property
    def num_samples(self) -> int | None:
        """Samples promised by the manifest (None without one)."""
        return None if self.manifest is None else int(self.manifest["totals"]["samples"])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for url in self.shards:
            yield from iter_shard(
                url,
                handler=self.handler,
                parse_json=self.parse_json,
                expected_sha256=self._sha256.get(url) if self.verify_sha256 else None,
                max_member_bytes=self.max_member_bytes,
                validate=self.validate,
                limits=dataset_limits(self.limits, self.manifest),
                expected_samples=self._samples.get(url),
                config_hash=None if self.manifest is None else self.manifest["config_hash"],
            )

    def index(self) -> pa.Table:
        """All shards' index rows (every input, failed ones included) with a ``shard`` column in front."""
        tables = []
        for shard, url in zip(self.shards, self._index_urls, strict=True):
            table = read_index_url(url)
            tables.append(table.add_column(0, "shard", pa.array([shard] * table.num_rows, pa.string())))
        if not tables:
            return pa.table({"shard": pa.array([], pa.string())})
        return pa.concat_tables(tables)


MAX_INDEX_BYTES = 1 << 30  # an index of 10^6 rows is ~100 MB; read no more than this


def read_index_url(url: str) -> pa.Table:
    """The Parquet index at ``url`` (a local one must be a regular file), schema checked (``index.read_index``).

    Raises:
        ValueError: naming the file when it is not a regular file or not a valid index; OSError when unreadable.
    """
    try:
        with open_input(url) as f:
            data = read_capped(f, MAX_INDEX_BYTES, url)
    except NotARegularFile as exc:
        raise ValueError(str(exc)) from None
    try:
        return checked_index(read_index(pa.BufferReader(data)))
    except ValueError as exc:
        text = str(exc)
        if text.startswith("<"):  # read_index's message names the buffer, not the file
            text = text.split(": ", 1)[-1]
        raise ValueError(f"{url}: {text}") from None


def checked_index(table: pa.Table) -> pa.Table:
    """``table`` after a full validation of its buffers (UTF-8 of every string, offsets), so converting its rows
    to Python cannot fail later with a stray exception.

    Raises:
        ValueError: ``index-invalid`` detail of the first damaged column.
    """
    try:
        table.validate(full=True)
    except pa.ArrowException as exc:
        raise ValueError(f"index data is damaged: {exc}") from None
    return table


def index_url(shard_url: str) -> str:
    """The Parquet index beside a ``.tar`` shard."""
    if not shard_url.endswith(".tar"):
        raise ValueError(f"shard {shard_url!r} must end with .tar")
    return shard_url[: -len(".tar")] + ".parquet"


def open_dataset(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], **options: Any
) -> ShardDataset:
    """``ShardDataset(source, **options)``: see the class for sources and options."""
    return ShardDataset(source, **options)
