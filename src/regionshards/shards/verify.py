"""``verify``: check a whole dataset folder against its manifest and the format, and report every problem.

Checks, in order: the manifest (schema, config hash, totals); the folder (missing shards and indexes, stray
files); each shard's size and sha256 against the manifest; each tar read safely to its end (member names,
types, sizes, header checksums); each sample (JSON parses and matches the schema, image member matches its
JSON, RLEs partition the image so areas sum to H·W, areas/boxes agree with the RLEs, proposal boxes lie in
the image, filter indices are valid); each index against its tar's members and the manifest's counts.
The folder may be an object-store prefix (``s3://bucket/out``, read through ``store.Store``): the same checks,
objects listed instead of files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._fs import NotARegularFile
from .checks import Finding, SampleInfo, _printable, check_sample, reconcile_index
from .index import read_index
from .manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, manifest_problems, manifest_schema_errors
from .reader import Recorder, checked_index, iter_sample_members
from .sample import FORMAT_VERSION
from .store import Store, is_remote, sha256_stream
from .tario import DEFAULT_MAX_MEMBER_BYTES, ShardError, split_name
from .validate import DEFAULT_LIMITS, Limits, check_summary, dataset_limits, load_json

__all__ = ["Finding", "Report", "verify"]


@dataclass
class Report:
    """The outcome of ``verify``: ``ok`` when there are no findings; ``str(report)`` is the readable text."""

    root: str
    findings: list[Finding] = field(default_factory=list)
    shards: int = 0
    samples_read: int = 0
    inputs: int = 0
    failures: int = 0
    summary: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def codes(self) -> list[str]:
        return [f.code for f in self.findings]

    def add(self, code: str, shard: str | None, member: str | None, message: str) -> None:
        self.findings.append(Finding(code, shard, member, message))

    def __str__(self) -> str:
        lines = [f"verify {self.root}", *(f"  {_printable(s)}" for s in self.summary)]
        if self.findings:
            lines.append(f"PROBLEMS: {len(self.findings)}")
            lines += [f"  {f}" for f in self.findings]
        lines.append(
            f"{'OK' if self.ok else 'FAILED'}: {self.shards} shard(s), {self.samples_read} sample(s) read; "
            f"manifest: inputs {self.inputs} = ok {self.inputs - self.failures} + failed {self.failures}"
        )
        return "\n".join(lines)


MAX_SUMMARY_BYTES = 16 << 20
SUMMARY_NAME = "summary.json"


def _load_manifest(root: Store, manifest_name: str, report: Report) -> dict[str, Any] | None:
    problem = root.problem(manifest_name)
    if problem == "missing":
        report.add("manifest-missing", None, None, f"no {manifest_name} in {root} (unfinished build?)")
        return None
    try:
        manifest = load_json(root.read(manifest_name, MAX_MANIFEST_BYTES))
    except (OSError, ValueError) as exc:
        report.add("manifest-invalid", manifest_name, None, str(exc))
        return None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        what = "" if isinstance(manifest, dict) else f" (a JSON {type(manifest).__name__}, not an object)"
        report.add("format-version", manifest_name, None,
                   f"format_version {version!r}, expected {FORMAT_VERSION}{what}")
        return None
    structural = manifest_schema_errors(manifest)
    for problem in structural or manifest_problems(manifest):
        report.add("manifest-invalid", manifest_name, None, problem)
    return None if structural else manifest  # semantic problems still let the shards be checked


def _summary_findings(root: Store, report: Report) -> None:
    """``summary.json`` (the build's run report), when present, must be a JSON object of numbers."""
    if root.problem(SUMMARY_NAME) == "missing":
        return
    try:
        summary_problems = check_summary(load_json(root.read(SUMMARY_NAME, MAX_SUMMARY_BYTES)))
    except (OSError, ValueError) as exc:
        summary_problems = [str(exc)]
    for problem in summary_problems:
        report.add("summary-invalid", SUMMARY_NAME, None, problem)


def _stray_files(root: Store, manifest: dict[str, Any], manifest_name: str, report: Report) -> None:
    # summary.json is the build's run report (not data); anything else is foreign or a leftover.
    expected = {manifest_name, "summary.json"}
    expected |= {s["name"] for s in manifest["shards"]} | {s["index"] for s in manifest["shards"]}
    for entry in root.names():
        if entry not in expected:
            report.add("stray-file", entry, None, "not named in the manifest (leftover temporary file or foreign data)")


def _file_findings(root: Store, name: str, size: int, sha256: str, prefix: str, report: Report) -> bool:
    """Existence, kind, size and sha256 of one file against the manifest; True when it is a readable regular
    file or object (FIFOs, devices and symlinks to them are never opened for reading)."""
    problem = root.problem(name)
    if problem == "missing":
        report.add(f"{prefix}-missing", name, None, "listed in the manifest but not in the folder")
        return False
    if problem is not None:
        report.add("not-regular-file", name, None, f"{problem}; only regular files are read")
        return False
    try:
        f, actual = root.open(name)
        with f:
            if actual != size:
                report.add(f"{prefix}-size-mismatch", name, None, f"{actual} bytes, manifest says {size}")
                return True
            digest = sha256_stream(f)
    except OSError as exc:
        report.add("not-regular-file" if isinstance(exc, NotARegularFile) else "unreadable", name, None,
                   str(exc))
        return False
    if digest != sha256:
        report.add(f"{prefix}-sha256-mismatch", name, None, f"sha256 {digest[:16]}…, manifest {sha256[:16]}…")
    return True


def _read_shard(root: Store, name: str, config_hash: str, report: Report, max_member_bytes: int,
                limits: Limits) -> tuple[list[SampleInfo], bool]:
    """Read a tar to its end; record member and sample findings; return the samples and whether it was whole."""
    recorder = Recorder()
    samples: list[SampleInfo] = []
    complete = True
    try:
        f, _ = root.open(name)
        with f:
            for key, members in iter_sample_members(f, name, recorder, max_member_bytes):
                found, meta = check_sample(key, members, config_hash, name, limits)
                report.findings.extend(found)
                offsets = {split_name(m.name)[1]: (m.data_offset, m.size) for m in members}
                samples.append(SampleInfo(key, offsets, meta))
    except ShardError as exc:  # structural damage: recorded, and the rest of this shard is unreadable
        recorder(exc)
        complete = False
    except OSError as exc:
        code = "not-regular-file" if isinstance(exc, NotARegularFile) else "unreadable"
        recorder(ShardError(code, name, None, f"{type(exc).__name__}: {exc}"))
        complete = False
    for err in recorder.errors:
        report.add(err.code, name, err.member, err.detail)
    report.samples_read += len(samples)
    return samples, complete


def _read_index(root: Store, name: str, size: int) -> Any:
    if root.local is not None:
        return read_index(root.local / name)
    import pyarrow as pa

    try:
        return read_index(pa.BufferReader(root.read(name, size)))  # its size already matched the manifest's
    except ValueError as exc:  # its message names a buffer, not the object
        raise ValueError(f"{root.join(name)}: {str(exc).split(': ', 1)[-1]}") from None


def verify(
    path: str | os.PathLike[str], *, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES, limits: Limits = DEFAULT_LIMITS
) -> Report:
    """Verify a dataset: ``path`` is its folder or its ``manifest.json`` (local, or an object-store URL). Never
    raises for a bad dataset; every problem is a finding in the returned ``Report`` (exit status 0 of the CLI only
    when none).
    ``limits`` are the validating parser's (``validate.Limits``: JSON size and depth, pixel cap)."""
    text = os.fspath(path)
    if is_remote(text):  # an object-store folder, or its manifest.json
        folder, _, last = text.rstrip("/").rpartition("/")
        root, manifest_name = (Store(folder), last) if last.endswith(".json") else (Store(text), MANIFEST_NAME)
    else:
        p = Path(text)
        root, manifest_name = (Store(p), MANIFEST_NAME) if p.is_dir() else (Store(p.parent), p.name)
    report = Report(text)
    manifest = _load_manifest(root, manifest_name, report)
    if manifest is None:
        return report
    totals = manifest["totals"]
    report.inputs, report.failures = totals["inputs"], totals["failures"]
    report.summary.append(
        f"{manifest_name}: format_version {manifest['format_version']}, regionshards "
        f"{manifest['tool']['version']}, config {manifest['config_hash'][:12]}, {totals['shards']} shard(s), "
        f"{totals['samples']} sample(s), {totals['bytes']} bytes"
    )
    _stray_files(root, manifest, manifest_name, report)
    _summary_findings(root, report)
    for entry in manifest["shards"]:
        report.shards += 1
        tar_name, index_name = entry["name"], entry["index"]  # one component each (the schema's patterns)
        has_tar = _file_findings(root, tar_name, entry["bytes"], entry["sha256"], "shard", report)
        has_index = _file_findings(root, index_name, entry["index_bytes"], entry["index_sha256"], "index", report)
        samples, complete = (
            _read_shard(root, tar_name, manifest["config_hash"], report, max_member_bytes,
                        dataset_limits(limits, manifest))
            if has_tar else ([], False)
        )
        if not has_index:
            continue
        try:
            table = checked_index(_read_index(root, index_name, entry["index_bytes"]))
        except (OSError, ValueError) as exc:
            report.add("index-invalid", index_name, None, str(exc))
            continue
        report.findings.extend(reconcile_index(table, samples, entry, tar_name, complete))
    return report
