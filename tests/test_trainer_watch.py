"""Watching a run: DetCon's online linear probe (stop-gradient, trained alongside, top-1 in metrics.jsonl),
``regionshards plot-run``, and TensorBoard scalars when tensorboard is installed."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the trainer needs the train extra (torch)")

from click.testing import CliRunner  # noqa: E402

from regionshards.cli.main import main  # noqa: E402
from regionshards.shards import Source, config_hash, write_manifest, write_shard  # noqa: E402
from regionshards.shards.sample import canonical_json  # noqa: E402
from regionshards.trainer.networks import ResNetTrunk  # noqa: E402
from regionshards.trainer.watch import OnlineProbe, batch_labels, sample_label  # noqa: E402
from test_trainer_data import CONFIG, block_record  # noqa: E402

torch.set_num_threads(1)
SMALL_HEADS = {"proj_hidden": 64, "pred_hidden": 64}


def labelled_dataset(out: Path, sizes: list[int], classes: list[str] | None) -> Path:
    """Block-image shards; sample i of shard s has class (s + i) % len(classes) and the manifest records the
    class names (or, with ``classes=None``, the same shards without any class)."""
    out.mkdir(parents=True)
    config = {**CONFIG, "source": {"layout": "imagenet" if classes else "flat", "classes": classes or []}}
    digest = config_hash(config)
    infos = []
    for s, n in enumerate(sizes):
        records = []
        for i in range(n):
            record = block_record(f"s{s}_{i:03d}", 64, 80, seed=s * 100 + i)
            if classes:
                c = (s + i) % len(classes)
                record = dataclasses.replace(record, source=Source(record.source.path, class_index=c,
                                                                   class_name=classes[c]))
            records.append(record)
        infos.append(write_shard(out, s, records, config_hash=digest))
    write_manifest(out, config, infos)
    return out


def test_sample_label_reads_the_source_tail() -> None:
    meta = {"image": {"field": "png"}, "segments": {"rles": []}, "source": {"class_index": 3, "class_name": "x",
                                                                           "image_id": None, "path": 'a,"source":'}}
    raw = canonical_json(meta)
    assert sample_label(raw) == 3 and sample_label(raw.decode()) == 3 and sample_label(meta) == 3
    meta["source"]["class_index"] = None
    assert sample_label(canonical_json(meta)) == -1
    assert batch_labels([{"json": canonical_json(meta)}, {}]).tolist() == [-1, -1]


def test_the_probe_learns_from_stopped_features_only() -> None:
    torch.manual_seed(0)
    trunk = ResNetTrunk("resnet18")
    probe = OnlineProbe(trunk, 512, 3, weight_decay=0.0, momentum=0.9, eta=1e-3, device=torch.device("cpu"))
    x = torch.randn(6, 3, 64, 64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0, -1, 2])
    for _ in range(25):
        features = trunk(x)  # the online pass the hook reads
        probe.step(labels, lr=2.0, world_size=1)
    assert x.grad is None and all(p.grad is None for p in trunk.parameters())  # nothing reached the network
    rows = probe.flush(1)
    assert len(rows) == 25 and rows[-1]["probe_loss"] < rows[0]["probe_loss"]
    assert rows[-1]["probe_top1"] == 1.0 and all(0.0 <= r["probe_top1"] <= 1.0 for r in rows)
    assert features.shape == (6, 512, 2, 2)
    with pytest.raises(RuntimeError, match="did not run"):
        probe.step(labels, lr=1.0, world_size=1)


def train_args(data: Path, run: Path, heads: Path, *extra: str) -> list[str]:
    return ["train", "--method", "detcon-b", "--data", str(data), "--out", str(run), "--backbone", "resnet18",
            "--image-size", "64", "--batch-size", "3", "--workers", "0", "--config", str(heads),
            "--log-every", "2", "--steps", "4", *extra]


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_probe_top1_in_metrics_and_the_network_unchanged_by_it(tmp_path: Path) -> None:
    heads = tmp_path / "heads.json"
    heads.write_text(json.dumps(SMALL_HEADS))
    with_classes = labelled_dataset(tmp_path / "a", [4, 3], ["cat", "dog", "fish"])
    without = labelled_dataset(tmp_path / "b", [4, 3], None)
    runner = CliRunner()
    probed = runner.invoke(main, train_args(with_classes, tmp_path / "p", heads))
    assert probed.exit_code == 0, probed.output
    plain = runner.invoke(main, train_args(without, tmp_path / "q", heads))
    assert plain.exit_code == 0, plain.output
    p, q = rows(tmp_path / "p"), rows(tmp_path / "q")
    assert all({"probe_loss", "probe_top1"} <= set(r) for r in p) and not any("probe_top1" in r for r in q)
    assert all(0.0 <= r["probe_top1"] <= 1.0 and np.isfinite(r["probe_loss"]) for r in p)
    # stop-gradient: the self-supervised losses are those of the same shards without labels
    assert [r["loss"] for r in p] == pytest.approx([r["loss"] for r in q], abs=1e-6)
    # resume: the probe comes back from the checkpoint and continues exactly
    parts = tmp_path / "parts"
    first = runner.invoke(main, train_args(with_classes, parts, heads, "--stop-at", "2"))
    second = runner.invoke(main, train_args(with_classes, parts, heads, "--resume"))
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    for a, b in zip(p, rows(parts), strict=True):
        assert a["probe_top1"] == b["probe_top1"] and a["probe_loss"] == pytest.approx(b["probe_loss"], abs=1e-6)
    if importlib.util.find_spec("tensorboard") is not None:
        assert any((tmp_path / "p" / "tensorboard").iterdir())
    else:
        assert not (tmp_path / "p" / "tensorboard").exists()


def test_tensorboard_scalars_are_every_numeric_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from regionshards.trainer.watch import tensorboard_writer, write_scalars

    class Writer:
        def __init__(self) -> None:
            self.scalars: list[tuple[str, float, int]] = []
            self.flushed = 0

        def add_scalar(self, name: str, value: float, step: int) -> None:
            self.scalars.append((name, value, step))

        def flush(self) -> None:
            self.flushed += 1

    writer = Writer()
    write_scalars(writer, [{"step": 3, "loss": 1.5, "lr": 0.1, "probe_top1": 0.5, "note": "x"}])
    assert writer.scalars == [("loss", 1.5, 3), ("lr", 0.1, 3), ("probe_top1", 0.5, 3)] and writer.flushed == 1
    monkeypatch.setitem(__import__("sys").modules, "torch.utils.tensorboard", None)  # as if not installed
    assert tensorboard_writer(tmp_path) is None and not (tmp_path / "tensorboard").exists()
