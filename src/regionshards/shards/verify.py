"""``verify``: check a whole dataset folder against its manifest and the format, and report every problem.

Checks, in order: the manifest (schema, config hash, totals); the folder (missing shards and indexes, stray
files); each shard's size and sha256 against the manifest; each tar read safely to its end (member names,
types, sizes, header checksums); each sample (JSON parses and matches the schema, image member matches its
JSON, RLEs partition the image so areas sum to H·W, areas/boxes agree with the RLEs, proposal boxes lie in
the image, filter indices are valid); each index against its tar's members and the manifest's counts.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checks import Finding, SampleInfo, _printable, check_sample, reconcile_index
from .index import read_index
from .manifest import MANIFEST_NAME, manifest_problems, manifest_schema_errors
from .reader import Recorder, iter_sample_members
from .sample import FORMAT_VERSION
from .tario import DEFAULT_MAX_MEMBER_BYTES, ShardError, split_name

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


def _load_manifest(root: Path, manifest_path: Path, report: Report) -> dict[str, Any] | None:
    if not manifest_path.is_file():
        report.add("manifest-missing", None, None, f"no {manifest_path.name} in {root} (unfinished build?)")
        return None
    try:
        manifest = json.loads(manifest_path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        report.add("manifest-invalid", manifest_path.name, None, f"not valid JSON: {exc}")
        return None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        report.add("format-version", manifest_path.name, None, f"format_version {version!r}, expected {FORMAT_VERSION}")
        return None
    structural = manifest_schema_errors(manifest)
    for problem in structural or manifest_problems(manifest):
        report.add("manifest-invalid", manifest_path.name, None, problem)
    return None if structural else manifest  # semantic problems still let the shards be checked


def _stray_files(root: Path, manifest: dict[str, Any], manifest_name: str, report: Report) -> None:
    # summary.json is the build's run report (not data); anything else is foreign or a leftover.
    expected = {manifest_name, "summary.json"}
    expected |= {s["name"] for s in manifest["shards"]} | {s["index"] for s in manifest["shards"]}
    for entry in sorted(os.listdir(root)):
        if entry not in expected:
            report.add("stray-file", entry, None, "not named in the manifest (leftover temporary file or foreign data)")


def _file_findings(path: Path, size: int, sha256: str, prefix: str, report: Report) -> bool:
    """Existence, size and sha256 of one file against the manifest; True when it exists."""
    if not path.is_file():
        report.add(f"{prefix}-missing", path.name, None, "listed in the manifest but not in the folder")
        return False
    actual = path.stat().st_size
    if actual != size:
        report.add(f"{prefix}-size-mismatch", path.name, None, f"{actual} bytes, manifest says {size}")
        return True
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if digest != sha256:
        report.add(f"{prefix}-sha256-mismatch", path.name, None, f"sha256 {digest[:16]}…, manifest {sha256[:16]}…")
    return True


def _read_shard(path: Path, config_hash: str, report: Report, max_member_bytes: int) -> tuple[list[SampleInfo], bool]:
    """Read a tar to its end; record member and sample findings; return the samples and whether it was whole."""
    recorder = Recorder()
    samples: list[SampleInfo] = []
    complete = True
    with open(path, "rb") as f:
        try:
            for key, members in iter_sample_members(f, path.name, recorder, max_member_bytes):
                found, meta = check_sample(key, members, config_hash, path.name)
                report.findings.extend(found)
                offsets = {split_name(m.name)[1]: (m.data_offset, m.size) for m in members}
                samples.append(SampleInfo(key, offsets, meta))
        except ShardError as exc:  # structural damage: recorded, and the rest of this shard is unreadable
            recorder(exc)
            complete = False
    for err in recorder.errors:
        report.add(err.code, path.name, err.member, err.detail)
    report.samples_read += len(samples)
    return samples, complete


def verify(path: str | os.PathLike[str], *, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> Report:
    """Verify a dataset: ``path`` is its folder or its ``manifest.json``. Never raises for a bad dataset;
    every problem is a finding in the returned ``Report`` (exit status 0 of the CLI only when none)."""
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
    for entry in manifest["shards"]:
        report.shards += 1
        tar_path, index_path = root / entry["name"], root / entry["index"]
        has_tar = _file_findings(tar_path, entry["bytes"], entry["sha256"], "shard", report)
        has_index = _file_findings(index_path, entry["index_bytes"], entry["index_sha256"], "index", report)
        samples, complete = (
            _read_shard(tar_path, manifest["config_hash"], report, max_member_bytes) if has_tar else ([], False)
        )
        if not has_index:
            continue
        try:
            table = read_index(index_path)
        except ValueError as exc:
            report.add("index-invalid", index_path.name, None, str(exc))
            continue
        report.findings.extend(reconcile_index(table, samples, entry, tar_path.name, complete))
    return report
