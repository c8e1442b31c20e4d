"""The shard format (spec: ``docs/format.md``): keys, sample codec, deterministic tar writer, Parquet index,
manifest with checksums, safe reader and ``verify``. No torch, no Ray here."""

from .keys import DuplicateKeyError, check_unique_keys, key_from_image_id, key_from_path
from .manifest import MANIFEST_NAME, ManifestError, ShardInfo, config_hash, read_manifest, write_manifest
from .reader import Recorder, ShardDataset, iter_shard, open_dataset, validated_sample
from .records import FilterKeep, GroundTruthData, InputRecord, InstancesData, ProposalsData, SegmentsData, Source
from .sample import FORMAT_VERSION, label_map, record_sample, sample_json
from .tario import ShardError
from .verify import Finding, Report, verify
from .writer import shard_name, write_shard

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "DuplicateKeyError",
    "FilterKeep",
    "Finding",
    "GroundTruthData",
    "InstancesData",
    "InputRecord",
    "ManifestError",
    "ProposalsData",
    "Recorder",
    "Report",
    "SegmentsData",
    "ShardDataset",
    "ShardError",
    "ShardInfo",
    "Source",
    "check_unique_keys",
    "config_hash",
    "iter_shard",
    "key_from_image_id",
    "key_from_path",
    "label_map",
    "open_dataset",
    "read_manifest",
    "record_sample",
    "sample_json",
    "shard_name",
    "validated_sample",
    "verify",
    "write_manifest",
    "write_shard",
]
