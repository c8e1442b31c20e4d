"""Trainer data: the epoch plan (equal batches per rank, no sample twice), seeded shuffles, mid-epoch resume,
loader workers, the partial JSON parse and reduced JPEG decoding, on real shards written by the shard writer."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the trainer needs the train extra (torch)")

from PIL import Image  # noqa: E402

from regionshards.shards import (  # noqa: E402
    InputRecord,
    SegmentsData,
    Source,
    config_hash,
    iter_shard,
    write_manifest,
    write_shard,
)
from regionshards.shards.sample import canonical_json  # noqa: E402
from regionshards.trainer.config import TrainConfig  # noqa: E402
from regionshards.trainer.data import ShardStream, make_loader, start_loader_server  # noqa: E402
from regionshards.trainer.decode import decode_for_crops, parse_partition  # noqa: E402
from regionshards.trainer.epoch_plan import EpochPlan, shuffled  # noqa: E402
from regionshards.trainer.transforms import Crop, dct_scale  # noqa: E402

torch.set_num_threads(1)  # two cores shared with other processes: OpenMP spinning would dominate
CONFIG = {"segments": {"method": "fh", "params": {}}, "proposals": None, "filters": []}


def block_labels(h: int, w: int, ny: int, nx: int) -> np.ndarray:
    """(h, w) int32 dense ids of an ny x nx grid of blocks."""
    return ((np.arange(h)[:, None] * ny // h) * nx + (np.arange(w)[None, :] * nx // w)).astype(np.int32)


def block_record(key: str, h: int, w: int, fmt: str = "PNG", seed: int = 0) -> InputRecord:
    """A record whose image has one colour per segment (a grid of blocks)."""
    labels = block_labels(h, w, 3, 4)
    colours = np.random.default_rng(seed).integers(0, 256, size=(labels.max() + 1, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(colours[labels]).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return InputRecord(key=key, source=Source(f"{key}.{fmt.lower()}"), image=buf.getvalue(), image_format=fmt,
                       image_mode="RGB", width=w, height=h,
                       segments=SegmentsData.from_labels(labels, "fh", {}))


def make_dataset(out: Path, sizes: list[int], h: int = 40, w: int = 56) -> Path:
    """Shards of the given sample counts (keys s<shard>_<i>), a manifest, and nothing else."""
    out.mkdir(parents=True)
    digest = config_hash(CONFIG)
    infos = []
    for s, n in enumerate(sizes):
        records = [block_record(f"s{s}_{i:03d}", h, w, seed=s * 100 + i) for i in range(n)]
        infos.append(write_shard(out, s, records, config_hash=digest))
    write_manifest(out, CONFIG, infos)
    return out


@pytest.fixture(scope="module")
def uneven(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three shards of 7, 3 and 5 samples."""
    return make_dataset(tmp_path_factory.mktemp("uneven") / "ds", [7, 3, 5])


def small_cfg(**kw) -> TrainConfig:
    base = dict(image_size=32, batch_size=2, num_masks=4, shuffle_buffer=4, workers=0)
    base.update(kw)
    return TrainConfig(**base)


def epoch_keys(ds: Path, cfg: TrainConfig, rank: int, world: int, epoch: int = 0) -> list[list[str]]:
    stream = ShardStream(ds, cfg, rank=rank, world_size=world, epochs=epoch + 1)
    return [b["keys"] for b in stream if b["epoch"] == epoch]


# --- the epoch plan ---------------------------------------------------------------------------------------


def test_every_rank_gets_the_same_batches_and_no_sample_twice(uneven: Path) -> None:
    cfg = small_cfg()
    for epoch in range(3):
        per_rank = [epoch_keys(uneven, cfg, r, 2, epoch) for r in range(2)]
        # 15 samples, 2 ranks: 7 positions each, 3 batches of 2 each; 3 samples dropped this epoch
        assert [len(b) for b in per_rank] == [3, 3]
        flat = [k for rank in per_rank for batch in rank for k in batch]
        assert len(flat) == 12 and len(set(flat)) == 12


@pytest.mark.parametrize(("sizes", "world", "batch", "workers"), [
    ([7, 3, 5], 2, 2, 1), ([7, 3, 5], 2, 2, 3), ([1, 9, 2, 6], 3, 2, 2), ([4], 4, 1, 2), ([5, 5, 5], 2, 3, 4)])
def test_epoch_plan_partitions_positions(sizes: list[int], world: int, batch: int, workers: int) -> None:
    urls = tuple(f"s{i}.tar" for i in range(len(sizes)))
    for epoch in range(4):
        taken: list[tuple[str, int]] = []
        batches = set()
        for rank in range(world):
            plan = EpochPlan(urls, tuple(sizes), 7, epoch, world, rank, batch, workers)
            assert plan.batches == (sum(sizes) // world) // batch
            assert sum(plan.worker_batches(v) for v in range(workers)) == plan.batches
            for v in range(workers):
                start, stop = plan.worker_range(v)
                assert stop - start == plan.worker_batches(v) * batch
                spans = plan.spans(start, stop)
                assert sum(s.take for s in spans) == stop - start
                taken += [(s.url, s.skip + i) for s in spans for i in range(s.take)]
                batches |= {(rank, v + j * workers) for j in range(plan.worker_batches(v))}
        assert len(taken) == len(set(taken)) == world * plan.batches * batch
        assert all(0 <= i < sizes[int(u[1:-4])] for u, i in taken)
        assert batches == {(r, b) for r in range(world) for b in range(plan.batches)}


def test_shard_order_is_the_same_on_every_rank_and_changes_per_epoch() -> None:
    urls = tuple(f"s{i}.tar" for i in range(12))
    plans = [EpochPlan(urls, (3,) * 12, 0, e, 4, r, 1, 1) for e in range(3) for r in range(4)]
    orders = [tuple(p.order) for p in plans]
    assert len(set(orders[:4])) == 1 and len(set(orders[4:8])) == 1
    assert orders[0] != orders[4] != orders[8]


def test_shuffle_is_seeded_changes_per_epoch_and_keeps_every_item() -> None:
    def run(seed: int) -> list[int]:
        return list(shuffled(iter(range(50)), 8, np.random.default_rng(seed)))

    assert run(1) == run(1) and sorted(run(1)) == list(range(50)) and run(1) != run(2)
    assert sorted(shuffled(iter(range(3)), 8, np.random.default_rng(0))) == [0, 1, 2]


def test_stream_is_reproducible_and_reshuffles_each_epoch(uneven: Path) -> None:
    cfg = small_cfg()
    a = [b["keys"] for b in ShardStream(uneven, cfg, epochs=3)]
    b = [b["keys"] for b in ShardStream(uneven, cfg, epochs=3)]
    assert a == b and len(a) == 3 * 7
    e0, e1 = a[:7], a[7:14]
    assert e0 != e1
    other = [b["keys"] for b in ShardStream(uneven, small_cfg(seed=5), epochs=1)]
    assert other != e0


def test_batches_hold_views_grids_and_ids(uneven: Path) -> None:
    cfg = small_cfg(image_size=64, num_masks=5)
    batch = next(iter(ShardStream(uneven, cfg, epochs=1)))
    assert batch["view0"].shape == (2, 3, 64, 64) and batch["view0"].dtype == torch.uint8
    assert batch["view0"].is_contiguous(memory_format=torch.channels_last)
    assert batch["grid1"].shape == (2, 2, 2) and batch["ids1"].shape == (2, 5)
    for v in "01":
        grid, ids = batch[f"grid{v}"], batch[f"ids{v}"]
        for i in range(2):  # every sampled id is on that view's grid
            assert set(ids[i].tolist()) <= set(grid[i].flatten().tolist())
    assert batch["step"] == 0 and batch["epoch"] == 0


# --- resume and workers -----------------------------------------------------------------------------------


def _signature(batch: dict) -> tuple:
    return (batch["step"], tuple(batch["keys"]), batch["view0"].sum().item(), batch["view1"].sum().item(),
            tuple(batch["ids0"].flatten().tolist()), tuple(batch["ids1"].flatten().tolist()))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_gives_the_same_batches(uneven: Path, workers: int) -> None:
    cfg = small_cfg(workers=workers)
    full = [_signature(b) for b in make_loader(ShardStream(uneven, cfg, rank=1, world_size=2, epochs=3), workers)]
    assert [s[0] for s in full] == list(range(9))  # three epochs of three batches, in order
    for start in (2, 4):
        stream = ShardStream(uneven, cfg, rank=1, world_size=2, start_step=start, epochs=3 - start // 3)
        resumed = [_signature(b) for b in make_loader(stream, workers)]
        assert resumed == full[start:]


def test_loader_workers_fork_with_torch_and_the_loader_already_imported(tmp_path: Path) -> None:
    # A worker is a child of the fork server; started by start_loader_server, the server imported the loader
    # (torch, cv2) before forking it. The child runs a builtin (exec), so unpickling its target imports nothing.
    context = start_loader_server("detcon")
    out = tmp_path / "modules.txt"
    child = context.Process(target=exec, args=(f"import sys; open({str(out)!r}, 'w').write(' '.join(sys.modules))",))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert {"torch", "cv2", "regionshards.trainer.data"} <= set(out.read_text().split())


class _EnvironmentStream(ShardStream):
    """Yields what a worker sees of one environment variable instead of batches."""

    def __iter__(self):
        yield {"mark": os.environ.get("REGIONSHARDS_TEST_MARK")}


def test_loader_workers_see_the_environment_of_when_the_loader_was_made(uneven: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # the fork server (and so a worker's inherited environment) may predate a variable set since, e.g. an
    # object store's endpoint or credentials set after a first loader
    start_loader_server("detcon")
    monkeypatch.setenv("REGIONSHARDS_TEST_MARK", "set after the server started")
    loader = make_loader(_EnvironmentStream(uneven, small_cfg()), 1)
    assert [b["mark"] for b in loader] == ["set after the server started"]


def test_workers_deliver_every_batch_once_in_order(uneven: Path) -> None:
    cfg = small_cfg(workers=2)  # 7 batches per epoch: 4 from one worker, 3 from the other, alternating
    got = list(make_loader(ShardStream(uneven, cfg, epochs=2), 2))
    assert [b["step"] for b in got] == list(range(14))
    for epoch in range(2):
        keys = [k for b in got[epoch * 7 : (epoch + 1) * 7] for k in b["keys"]]
        assert len(keys) == len(set(keys)) == 14


def test_a_dataset_too_small_for_the_ranks_is_refused(uneven: Path) -> None:
    with pytest.raises(ValueError, match="cannot give each"):
        ShardStream(uneven, small_cfg(batch_size=8), world_size=2)


def test_a_shard_without_a_manifest_is_refused(uneven: Path) -> None:
    with pytest.raises(ValueError, match="manifest"):
        ShardStream(str(uneven / "shard-000000.tar"), small_cfg())


# --- partial JSON parse and decoding ----------------------------------------------------------------------


def test_partial_parse_equals_the_full_parse(uneven: Path) -> None:
    for sample in iter_shard(uneven / "shard-000001.tar", parse_json=False):
        assert parse_partition(sample["json"]) == json.loads(sample["json"])["segments"]


def test_partial_parse_falls_back_for_nested_keys_and_refuses_missing_segments() -> None:
    segs = {"method": "fh", "params": {"segments": {"x": 1}}, "rles": [{"size": [1, 1], "counts": "01"}]}
    meta = {"key": "k", "segments": segs, "source": {"path": "a"}}
    assert parse_partition(canonical_json(meta)) == segs
    odd = json.dumps(meta, indent=1)  # not canonical: the fast path cannot be trusted
    assert parse_partition(odd) == segs
    with pytest.raises(ValueError, match="no segments"):
        parse_partition(canonical_json({"segments": None, "source": {}}))


def test_jpeg_is_decoded_at_reduced_size_when_both_crops_allow() -> None:
    rec = block_record("big", 260, 300, fmt="JPEG")
    big, small = Crop(0, 0, 250, 270, False), Crop(10, 10, 130, 140, False)
    assert dct_scale([big], 64) == 2 and dct_scale([big, small], 32) == 4 and dct_scale([small], 100) == 1
    image, scale = decode_for_crops(rec.image, "jpg", 260, 300, 4)
    assert (scale, image.shape) == (4, (65, 75, 3))
    full, _ = decode_for_crops(rec.image, "jpg", 260, 300, 1)
    reduced = full.reshape(65, 4, 75, 4, 3).mean(axis=(1, 3))
    assert np.abs(image.astype(float) - reduced).mean() < 4  # a DCT-domain downscale of the same pixels


def test_png_is_decoded_at_full_size_and_sizes_are_checked() -> None:
    rec = block_record("p", 20, 30)
    image, scale = decode_for_crops(rec.image, "png", 20, 30, 2)
    assert (scale, image.shape) == (1, (20, 30, 3))
    with pytest.raises(ValueError, match="30x20"):
        decode_for_crops(rec.image, "png", 21, 30, 1)


# --- batch mixing -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def class_sorted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 shards of 5 samples, shard s holding only class s (a class-sorted build)."""
    return make_dataset(tmp_path_factory.mktemp("sorted") / "ds", [5] * 24, h=32, w=32)


def test_batches_mix_classes_like_iid_sampling_on_class_sorted_shards(class_sorted: Path) -> None:
    from regionshards.trainer.epoch_plan import batch_mixing, expected_distinct

    iid = expected_distinct([5] * 24, 8)  # 8 samples drawn from 24 classes of 5: ≈ 6.9
    assert 6.5 < iid < 7.5

    def distinct(cfg: TrainConfig) -> list[int]:
        stream = ShardStream(class_sorted, cfg, epochs=2)
        return [len({k.split("_")[0] for k in batch["keys"]}) for batch in stream]

    mixed = small_cfg(batch_size=8, shuffle_buffer=8, workers=2)
    got = distinct(mixed)
    assert len(got) == 30 and np.mean(got) >= 0.95 * iid
    # the plan of contiguous runs (interleave 0, what the trainer did before): batches of a few neighbouring shards
    runs = distinct(small_cfg(batch_size=8, shuffle_buffer=8, workers=2, interleave=0))
    assert np.mean(runs) < 0.7 * iid
    # the metadata-only measurement follows the same plan, interleave and buffer as the real stream
    classes = [[s] * 5 for s in range(24)]
    for cfg in (mixed, small_cfg(batch_size=8, shuffle_buffer=8, interleave=0)):
        one = small_cfg(**{**{k: getattr(cfg, k) for k in ("batch_size", "shuffle_buffer", "interleave")}})
        assert batch_mixing([5] * 24, classes, one, batches=15) == distinct(one)[:15]


def test_interleave_takes_one_sample_per_open_shard_in_turn() -> None:
    from regionshards.trainer.epoch_plan import Span, interleaved

    spans = [Span("a", 0, 3), Span("b", 1, 1), Span("c", 0, 2), Span("d", 0, 2)]

    def read(span: Span):
        return iter(f"{span.url}{span.skip + i}" for i in range(span.take))

    assert list(interleaved(spans, 2, read)) == ["a0", "b1", "a1", "c0", "a2", "c1", "d0", "d1"]
    assert list(interleaved(spans, 9, read)) == ["a0", "b1", "c0", "d0", "a1", "c1", "d1", "a2"]
    assert list(interleaved(spans, 1, read)) == ["a0", "a1", "a2", "b1", "c0", "c1", "d0", "d1"]


def test_mix_ranks_gives_every_rank_all_shards_equal_batches_and_no_sample_twice(class_sorted: Path) -> None:
    from regionshards.trainer.epoch_plan import expected_distinct

    cfg = small_cfg(batch_size=8, shuffle_buffer=8, mix_ranks=True)
    per_rank = [epoch_keys(class_sorted, cfg, r, 2) for r in range(2)]
    assert [len(b) for b in per_rank] == [7, 7]  # 120 samples, 2 ranks: 60 positions, 7 batches of 8 each
    flat = [k for rank in per_rank for batch in rank for k in batch]
    assert len(flat) == len(set(flat)) == 112
    iid = expected_distinct([5] * 24, 8)
    for rank in per_rank:  # each rank's own batches draw on all 24 classes, not on its half
        assert np.mean([len({k.split("_")[0] for k in batch}) for batch in rank]) >= 0.95 * iid
        assert len({k.split("_")[0] for batch in rank for k in batch}) > 12
    halves = [epoch_keys(class_sorted, small_cfg(batch_size=8, shuffle_buffer=8), r, 2) for r in range(2)]
    assert all(len({k.split("_")[0] for batch in rank for k in batch}) <= 13 for rank in halves)
