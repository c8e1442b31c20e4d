"""``verify``: check a whole dataset folder against its manifest and the format, and report every problem.

Checks, in order: the manifest (schema, config hash, totals); the folder (missing shards and indexes, stray
files); each shard's size and sha256 against the manifest; each tar read safely to its end (member names,
types, sizes, header checksums); each sample (JSON parses and matches the schema, image member matches its
JSON, RLEs partition the image so areas sum to H·W, areas/boxes agree with the RLEs, proposal boxes lie in
the image, filter indices are valid); each index against its tar's members and the manifest's counts.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._fs import NotARegularFile, file_problem, open_regular, read_regular
from .checks import Finding, SampleInfo, _printable, check_sample, reconcile_index
from .index import read_index
from .manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, manifest_problems, manifest_schema_errors
from .reader import Recorder, checked_index, iter_sample_members
from .sample import FORMAT_VERSION
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


def _load_manifest(root: Path, manifest_path: Path, report: Report) -> dict[str, Any] | None:
    problem = file_problem(manifest_path)
    if problem == "missing":
        report.add("manifest-missing", None, None, f"no {manifest_path.name} in {root} (unfinished build?)")
        return None
    try:
        manifest = load_json(read_regular(manifest_path, MAX_MANIFEST_BYTES))
    except (OSError, ValueError) as exc:
        report.add("manifest-invalid", manifest_path.name, None, str(exc))
        return None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        what = "" if isinstance(manifest, dict) else f" (a JSON {type(manifest).__name__}, not an object)"
        report.add("format-version", manifest_path.name, None,
                   f"format_version {version!r}, expected {FORMAT_VERSION}{what}")
        return None
    structural = manifest_schema_errors(manifest)
    for problem in structural or manifest_problems(manifest):
        report.add("manifest-invalid", manifest_path.name, None, problem)
    return None if structural else manifest  # semantic problems still let the shards be checked


def _summary_findings(root: Path, report: Report) -> None:
    """``summary.json`` (the build's run report), when present, must be a JSON object of numbers."""
    path = root / SUMMARY_NAME
    if file_problem(path) == "missing":
        return
    try:
        summary_problems = check_summary(load_json(read_regular(path, MAX_SUMMARY_BYTES)))
    except (OSError, ValueError) as exc:
        summary_problems = [str(exc)]
    for problem in summary_problems:
        report.add("summary-invalid", SUMMARY_NAME, None, problem)


def _stray_files(root: Path, manifest: dict[str, Any], manifest_name: str, report: Report) -> None:
    # summary.json is the build's run report (not data); anything else is foreign or a leftover.
    expected = {manifest_name, "summary.json"}
    expected |= {s["name"] for s in manifest["shards"]} | {s["index"] for s in manifest["shards"]}
    for entry in sorted(os.listdir(root)):
        if entry not in expected:
            report.add("stray-file", entry, None, "not named in the manifest (leftover temporary file or foreign data)")


def _file_findings(path: Path, size: int, sha256: str, prefix: str, report: Report) -> bool:
    """Existence, kind, size and sha256 of one file against the manifest; True when it is a readable regular
    file (FIFOs, devices and symlinks to them are never opened for reading)."""
    problem = file_problem(path)
    if problem == "missing":
        report.add(f"{prefix}-missing", path.name, None, "listed in the manifest but not in the folder")
        return False
    if problem is not None:
        report.add("not-regular-file", path.name, None, f"{problem}; only regular files are read")
        return False
    try:
        with open_regular(path) as f:
            actual = os.fstat(f.fileno()).st_size
            if actual != size:
                report.add(f"{prefix}-size-mismatch", path.name, None, f"{actual} bytes, manifest says {size}")
                return True
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        report.add("not-regular-file" if isinstance(exc, NotARegularFile) else "unreadable", path.name, None,
                   str(exc))
        return False
    if digest != sha256:
        report.add(f"{prefix}-sha256-mismatch", path.name, None, f"sha256 {digest[:16]}…, manifest {sha256[:16]}…")
    return True


def _read_shard(path: Path, config_hash: str, report: Report, max_member_bytes: int,
                limits: Limits) -> tuple[list[SampleInfo], bool]:
    """Read a tar to its end; record member and sample findings; return the samples and whether it was whole."""
    recorder = Recorder()
    samples: list[SampleInfo] = []
    complete = True
    try:
        with open_regular(path) as f:
            for key, members in iter_sample_members(f, path.name, recorder, max_member_bytes):
                found, meta = check_sample(key, members, config_hash, path.name, limits)
                report.findings.extend(found)
                offsets = {split_name(m.name)[1]: (m.data_offset, m.size) for m in members}
                samples.append(SampleInfo(key, offsets, meta))
    except ShardError as exc:  # structural damage: recorded, and the rest of this shard is unreadable
        recorder(exc)
        complete = False
    except OSError as exc:
        code = "not-regular-file" if isinstance(exc, NotARegularFile) else "unreadable"
        recorder(ShardError(code, path.name, None, f"{type(exc).__name__}: {exc}"))
        complete = False
    for err in recorder.errors:
        report.add(err.code, path.name, err.member, err.detail)
    report.samples_read += len(samples)
    return samples, complete


def verify(
    path: str | os.PathLike[str], *, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES, limits: Limits = DEFAULT_LIMITS
) -> Report:
    """Verify a dataset: ``path`` is its folder or its ``manifest.json``. Never raises for a bad dataset;
    every problem is a finding in the returned ``Report`` (exit status 0 of the CLI only when none).
    ``limits`` are the validating parser's (``validate.Limits``: JSON size and depth, pixel cap)."""
    p = Path(path)
    root, manifest_path = (p, p / MANIFEST_NAME) if p.is_dir() else (p.parent, p)
    report = Report(str(p))
    manifest = _load_manifest(root, manifest_path, report)
    if manifest is None:
        return report
    totals = manifest["totals"]
    report.inputs, report.failures = totals["inputs"], totals["failures"]
    report.summary.append(
        f"{manifest_path.name}: format_version {manifest['format_version']}, regionshards "
        f"{manifest['tool']['version']}, config {manifest['config_hash'][:12]}, {totals['shards']} shard(s), "
        f"{totals['samples']} sample(s), {totals['bytes']} bytes"
    )
    _stray_files(root, manifest, manifest_path.name, report)
    _summary_findings(root, report)
    for entry in manifest["shards"]:
        report.shards += 1
        tar_path, index_path = root / entry["name"], root / entry["index"]
        has_tar = _file_findings(tar_path, entry["bytes"], entry["sha256"], "shard", report)
        has_index = _file_findings(index_path, entry["index_bytes"], entry["index_sha256"], "index", report)
        samples, complete = (
            _read_shard(tar_path, manifest["config_hash"], report, max_member_bytes, dataset_limits(limits, manifest))
            if has_tar else ([], False)
        )
        if not has_index:
            continue
        try:
            table = checked_index(read_index(index_path))
        except ValueError as exc:
            report.add("index-invalid", index_path.name, None, str(exc))
            continue
        report.findings.extend(reconcile_index(table, samples, entry, tar_path.name, complete))
    return report
