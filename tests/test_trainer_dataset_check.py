"""A method whose inputs the build did not store is refused before training starts, naming the dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from build_inputs import FAST, make_imagenet
from regionshards.builder import list_source, make_config
from regionshards.builder.plan import plan_shards
from regionshards.builder.worker import process_shard
from regionshards.cli.main import main
from regionshards.shards import write_manifest

pytest.importorskip("torch", reason="the trainer needs the train extra")


def build(tmp_path: Path, **options) -> Path:
    listing = list_source(make_imagenet(tmp_path / "src"))
    config = make_config(**FAST, shard_size=10, layout=listing.layout, classes=listing.classes, **options)
    out = tmp_path / "out"
    out.mkdir()
    infos = [process_shard(s.index, s.refs, config, out).info for s in plan_shards(listing.refs, 10, "shard")]
    write_manifest(out, config, infos)
    return out


@pytest.mark.parametrize(
    "options, method, message",
    [
        ({"proposals": "none"}, "soco", "built with --proposals none"),
        ({"segments": "none"}, "detcon-b", "built with --segments none"),
        ({"filters": ("ratio3",)}, "soco", "not 'ratio3size0308'"),
    ],
)
def test_missing_inputs_are_refused(tmp_path: Path, options: dict, method: str, message: str) -> None:
    data = build(tmp_path, **options)
    result = CliRunner().invoke(main, ["train", "--method", method, "--data", str(data), "--out",
                                       str(tmp_path / "run"), "--backbone", "resnet18", "--image-size", "64",
                                       "--batch-size", "2", "--steps", "1", "--workers", "0"])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "run").exists()
