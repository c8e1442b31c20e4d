"""Issue #13 case by case, in process: each hostile dataset (resealed, so checksums agree) gives its exact code
from the reader (raised or recorded ``ShardError`` naming shard and member) and from ``verify``; plus the
validating parser's own pieces (JSON depth, the fast shape check against the schema, image sniffing)."""

from __future__ import annotations

import copy
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures import hostile as h
from fixtures.tiny_build import imagenet_inputs, make_record
from regionshards.report.stats import box_coverage, compute_stats
from regionshards.shards import Recorder, ShardError, iter_shard, open_dataset, sample_json, verify
from regionshards.shards.sample import canonical_json, schema_errors
from regionshards.shards.shape import ShapeError, check_shape
from regionshards.shards.validate import (
    SampleError,
    check_sample,
    json_depth,
    load_json,
    meta_problems,
    nesting,
    sniff_image,
)

HASH = "0" * 64
KEYS = ["animal_chelsea", "object_coffee", "object_coins", "object_rocket", "person_astronaut", "person_camera"]
SHARD0 = h.SHARD


def _read(ds: Path) -> tuple[list[str], list[tuple[str, str | None]]]:
    recorder = Recorder()
    keys = [s["__key__"] for s in open_dataset(ds, handler=recorder)]
    return keys, [(e.code, e.member) for e in recorder.errors]


def _codes(ds: Path) -> list[str]:
    return [f.code for f in verify(ds).findings]


def _first_key(ds: Path) -> str:
    return next(iter(open_dataset([str(ds / SHARD0)])))["__key__"]


@pytest.mark.parametrize(("mutate", "code"), [
    (lambda ds: h.edit_json(ds, h.inflate_rle), "rle-size"),
    (lambda ds: h.edit_json(ds, lambda m: h.inflate_rle(m, 10**6, 10**6, image_too=True)), "too-many-pixels"),
    (lambda ds: h.edit_json(ds, h.boxes_outside), "box-outside-image"),
    (lambda ds: h.edit_json(ds, lambda m: h.oversize_counts(m, 1 << 20)), "rle-too-long"),
    (lambda ds: h.raw_json(ds, b"[1, 2, 3]"), "schema"),
    (lambda ds: h.replace_member(ds, lambda f, d: d.replace(b'"', b"#", 1) if f == "json" else None), "bad-json"),
    (lambda ds: h.replace_member(ds, lambda f, d: h.png_header(100_000, 100_000) if f != "json" else None),
     "too-many-pixels"),
])
def test_hostile_sample_is_refused_naming_shard_and_member(dataset_copy: Path, mutate, code: str) -> None:
    key = _first_key(dataset_copy)
    mutate(dataset_copy)
    with pytest.raises(ShardError) as info:
        list(open_dataset(dataset_copy, verify_sha256=True))
    assert info.value.code == code and info.value.shard == str(dataset_copy / SHARD0)
    assert info.value.member.startswith(f"{key}.")
    keys, errors = _read(dataset_copy)
    assert len(keys) == 5 and [c for c, _ in errors] == [code]  # that sample only, and no count-mismatch on top
    assert code in _codes(dataset_copy)


def test_json_nested_100000_levels_is_a_finding_not_a_recursion_error(dataset_copy: Path) -> None:
    meta = next(iter(open_dataset([str(dataset_copy / SHARD0)])))["json"]
    h.raw_json(dataset_copy, h.nest(meta, 100_000).encode())
    assert _read(dataset_copy)[1] == [("json-too-deep", f"{meta['key']}.json")]
    assert _codes(dataset_copy)[:1] == ["json-too-deep"]
    for depth in (40, 500, 5000):  # below and above the decoder's own recursion limit
        h.raw_json(dataset_copy, h.nest(meta, depth).encode())
        assert _read(dataset_copy)[1] == [("json-too-deep", f"{meta['key']}.json")], depth


def test_zeroed_header_mid_shard_is_an_error_even_when_resealed(dataset_copy: Path) -> None:
    from regionshards.shards.tario import BLOCK, iter_members

    with open(dataset_copy / SHARD0, "rb") as f:
        third = [m.header_offset for m in iter_members(f, SHARD0)][2] // BLOCK
    h.zero_block(dataset_copy, third)
    with pytest.raises(ShardError, match="data-after-end"):
        list(open_dataset(dataset_copy, verify_sha256=True))
    keys, errors = _read(dataset_copy)
    assert len(keys) == 4 and errors == [("data-after-end", "animal_chelsea.json")]  # coffee and coins lost
    assert "data-after-end" in _codes(dataset_copy)


def test_trailing_garbage_and_short_shards_are_reported(dataset_copy: Path, tmp_path: Path) -> None:
    original = (dataset_copy / SHARD0).read_bytes()
    h.append_garbage(dataset_copy)
    assert _read(dataset_copy) == (KEYS, [("data-after-end", "object_coins.json")])  # nothing lost before it
    assert "data-after-end" in _codes(dataset_copy)
    (dataset_copy / SHARD0).write_bytes(original)
    h.drop_sample(dataset_copy)
    keys, errors = _read(dataset_copy)
    assert len(keys) == 5 and errors == [("count-mismatch", None)]  # 2 of 3 samples in shard 0
    h.zero_fill(dataset_copy)
    keys, errors = _read(dataset_copy)
    assert keys == KEYS[3:] and errors == [("count-mismatch", None)]
    with pytest.raises(ShardError, match="count-mismatch"):
        list(open_dataset(dataset_copy))
    assert "count-mismatch" in _codes(dataset_copy)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder"])
def test_a_shard_that_is_not_a_regular_file_never_hangs(dataset_copy: Path, kind: str) -> None:
    if kind == "fifo":
        h.fifo_shard(dataset_copy)
    elif kind == "dev-zero":
        h.symlink_shard(dataset_copy)
    else:
        os.remove(dataset_copy / SHARD0)
        (dataset_copy / SHARD0).mkdir()
    result: list = []
    worker = threading.Thread(target=lambda: result.append((_read(dataset_copy), _codes(dataset_copy))), daemon=True)
    worker.start()
    worker.join(30)
    assert result, "a reader hangs on a non-regular shard"
    (keys, errors), codes = result[0]
    assert keys == KEYS[3:] and errors == [("not-regular-file", None)]
    assert "not-regular-file" in codes


def test_junk_summary_and_manifest_are_one_line_errors_naming_the_file(dataset_copy: Path) -> None:
    for text in (b"[1, 2]", b"\x1b[2J not json", b'{"images_per_second": "x", "wall_seconds": 1, "cpus": 1}',
                 b"[" * 100_000):
        h.write_summary(dataset_copy, text)
        with pytest.raises(ValueError, match="summary.json") as info:
            compute_stats(dataset_copy)
        assert "\n" not in str(info.value)
        assert "summary-invalid" in _codes(dataset_copy)
    os.remove(dataset_copy / "summary.json")
    for text in (b"[]", b"[" * 100_000 + b"]" * 100_000, b"\xff\x00"):
        h.write_manifest_text(dataset_copy, text)
        with pytest.raises(ValueError, match="manifest.json"):
            open_dataset(dataset_copy)
        assert _codes(dataset_copy)[0] in ("manifest-invalid", "format-version")


def test_dataset_strings_with_control_characters_never_reach_the_terminal(dataset_copy: Path) -> None:
    from click.testing import CliRunner

    from regionshards.cli.main import main

    h.edit_json(dataset_copy, h.ansi_strings)
    for args in (["stats", str(dataset_copy)], ["verify", str(dataset_copy)]):
        result = CliRunner().invoke(main, args)
        assert "\x1b" not in result.output and "\r" not in result.output, args
    assert "\\x1b[31mred" in CliRunner().invoke(main, ["stats", str(dataset_copy)]).output


def test_box_coverage_of_30000_boxes_is_exact_and_small() -> None:
    rng = np.random.default_rng(1)
    boxes = np.stack([rng.integers(0, 48, 30000), rng.integers(0, 32, 30000),
                      rng.integers(1, 10, 30000), rng.integers(1, 10, 30000)], axis=1)
    mask = np.zeros((32, 48), bool)
    for x, y, w, hh in boxes:
        mask[y : y + hh, x : x + w] = True
    assert box_coverage(boxes, 32, 48) == pytest.approx(mask.mean())
    far = boxes + [10**6, 10**6, 0, 0]  # outside the image: clipped away, no (2N)^2 grid
    assert box_coverage(far, 32, 48) == 0.0


# ------------------------------------------------------------------------------------------- parser pieces

_json = st.recursive(st.none() | st.integers() | st.text(alphabet='[]{}"\\ab\n'),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text('[]{}"\\x'), inner,
                                                                                 max_size=3), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_json_depth_equals_the_parsed_depth(value) -> None:
    text = json.dumps(value).encode()
    assert json_depth(text) == nesting(value, 10**9)
    assert load_json(text) == value


def _stdlib_load(data: bytes):
    """load_json before orjson: the stdlib's value, or the refusal's code."""
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "bad-json"
    except RecursionError:
        return "json-too-deep"


def _typed(value):
    """A value with every scalar's type beside it (1 == 1.0 == True must not pass), NaN comparable."""
    if isinstance(value, dict):
        return ("dict", [(k, _typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [_typed(v) for v in value])
    return (type(value).__name__, repr(value))


_scalars = (st.none() | st.booleans() | st.integers() | st.integers(-(2**70), 2**70)
            | st.floats(allow_nan=True, allow_infinity=True) | st.text())
_documents = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=12)
_tokens = st.sampled_from(['NaN', 'Infinity', '-Infinity', '"\\ud800"', '"\\udc00x"', '1e400', '-0', '1E-400',
                           '123456789012345678901234567890', '0.1', '5e-324', '1.7976931348623157e308', '"\\u0000"',
                           '\ufeff', ' ', '\t', ',', ']', '}', '{', '[', '"', '\\', ':', '00', '-', '.5', 'tru'])


@settings(max_examples=600, deadline=None)
@given(_documents, st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-32"]), st.booleans(),
       st.lists(st.tuples(st.integers(0, 10**6), _tokens), max_size=3))
def test_load_json_reads_what_the_stdlib_reads(value, encoding: str, ascii_only: bool, inserts) -> None:
    """Same value (types included) or the same refusal as the stdlib alone, on documents orjson reads and on
    those it refuses (NaN, huge exponents, other encodings, lone surrogates, broken text); ``fast`` differs
    only by giving integers outside [-2**63, 2**64) as floats (documented; ``check_sample`` handles them)."""
    text = json.dumps(value, ensure_ascii=ascii_only)
    for at, token in inserts:
        at %= len(text) + 1
        text = text[:at] + token + text[at:]
    data = text.encode(encoding, "surrogatepass")
    expected = _stdlib_load(data)
    for fast in (False, True):
        try:
            got = load_json(data, fast=fast)
        except SampleError as exc:
            got = exc.code
        allowed = [_typed(expected), _typed(_wide_as_float(expected))] if fast else [_typed(expected)]
        assert _typed(got) in allowed


def _wide_as_float(value):
    """The stdlib's value with each integer outside [-2**63, 2**64) as the nearest float (what orjson gives)."""
    if isinstance(value, dict):
        return {k: _wide_as_float(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wide_as_float(v) for v in value]
    if type(value) is int and not -(2**63) <= value < 2**64:
        return float(value)
    return value


def test_load_json_limits() -> None:
    with pytest.raises(SampleError) as info:
        load_json(b"[" * 33 + b"]" * 33)
    assert info.value.code == "json-too-deep"
    with pytest.raises(SampleError) as info:
        load_json(b"[" * 100_000, prescan=False)
    assert info.value.code == "json-too-deep"
    assert load_json(b'["' + b"[" * 40 + b'"]') == ["[" * 40]  # brackets inside a string do not nest


@pytest.fixture(scope="module")
def meta() -> dict:
    return sample_json(make_record(imagenet_inputs()[0]), HASH)


def test_shape_check_agrees_with_the_schema(meta: dict) -> None:
    from test_shards_sample import _mutations

    assert check_shape(meta) and schema_errors(meta) == []
    for what, broken in _mutations(meta):
        if what == "boolean width":
            continue  # booleans send the document through the full schema (see shape.py)
        with pytest.raises(ShapeError):
            check_shape(broken)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_shape_never_accepts_what_the_schema_refuses(meta: dict, data: st.DataObject) -> None:
    """Replace one value anywhere in a real sample JSON by a random JSON value (no booleans): when the schema
    refuses the result, the fast check does too."""
    broken = copy.deepcopy(meta)
    paths = []

    def walk(node, path):
        paths.append(path)
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in list(items)[:6]:
            walk(v, (*path, k))

    walk(broken, ())
    path = data.draw(st.sampled_from(paths[1:]))
    leaf = st.none() | st.integers(-3, 2**70) | st.floats(allow_nan=False) | st.text(max_size=3)
    value = data.draw(st.recursive(leaf, lambda i: st.lists(i, max_size=3) | st.dictionaries(st.text(max_size=3), i,
                                                                                             max_size=2), max_leaves=6))
    node = broken
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    if schema_errors(broken):
        with pytest.raises(ShapeError):
            check_shape(broken)


def test_sniffing_maps_every_pillow_failure_to_a_code() -> None:
    assert sniff_image(h.png_header(40, 30)).width == 40
    for data, code in ((h.png_header(100_000, 100_000), "too-many-pixels"), (b"", "image-unreadable"),
                       (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "image-unreadable"), (b"GIF89a\xff", "image-unreadable")):
        with pytest.raises(SampleError) as info:
            sniff_image(data)
        assert info.value.code == code


def test_check_sample_accepts_every_real_sample(tiny_dataset: Path) -> None:
    for s in iter_shard(tiny_dataset / SHARD0, parse_json=False):
        fields = {k: v for k, v in s.items() if not k.startswith("__")}
        meta, problems = check_sample(s["__key__"], fields)
        assert problems == [] and meta == json.loads(s["json"])
        assert canonical_json(meta) == s["json"]


@pytest.mark.parametrize("where", ["segments.params", "proposals.params", "source.class_index", "image.width",
                                   "segments.areas", "instances.annotation_ids"])
@pytest.mark.parametrize("value", [10**30, -(10**30), 2**64, 2**63, -(2**63) - 1])
def test_integers_past_64_bits_read_as_the_stdlib_reads_them(tiny_dataset: Path, where: str, value: int) -> None:
    """orjson gives an integer outside [-2**63, 2**64) as a float: in free-form params the sample still reads
    to the stdlib's integer; where the format has an integer (int64), anything outside int64 is refused, with
    the stdlib's value too (2**63 used to wrap to -2**63 in an id array)."""
    s = next(iter_shard(tiny_dataset / SHARD0, parse_json=False))
    meta = json.loads(s["json"])
    part, name = where.split(".")
    if name == "params":
        meta[part]["params"]["wide"] = [{"x": value}]
    elif part == "instances":
        meta["ground_truth"] = {"method": "coco", "rles": meta["segments"]["rles"][:1], "areas": [1536],
                                "bboxes": [[0, 0, 48, 32]], "annotation_ids": [-1], "category_ids": [-1]}
        meta["instances"] = {"annotation_ids": [value], "category_ids": [1], "bboxes": [[0, 0, 1, 1]],
                             "iscrowd": [0], "has_mask": [0]}
        assert meta_problems(json.loads(canonical_json(meta).replace(str(value).encode(), b"7"))) == []
    elif name == "areas":
        meta[part]["areas"][0] = value
    else:
        meta[part][name] = value
    fields = {k: v for k, v in s.items() if not k.startswith("__")}
    fields["json"] = canonical_json(meta)
    got, problems = check_sample(s["__key__"], fields)
    reference = meta_problems(json.loads(fields["json"]))  # the checks on the stdlib's value
    if name == "params":
        assert problems == [] and reference == []
        assert type(got[part]["params"]["wide"][0]["x"]) is int and got == meta
    else:
        assert got is None and problems and reference
        assert {p.code for p in problems} <= {"schema", "too-many-pixels"}


def test_label_map_checks_a_dict_that_did_not_come_from_the_reader(tiny_dataset: Path) -> None:
    from regionshards.shards import label_map

    sample = next(iter(open_dataset(tiny_dataset)))
    assert label_map(sample).shape == (32, 48)
    h.inflate_rle(sample["json"])
    with pytest.raises(ValueError, match="rle-size"):
        label_map(sample)
    h.inflate_rle(sample["json"], 10**5, 10**5, image_too=True)
    with pytest.raises(ValueError, match="too-many-pixels"):
        label_map(sample)


def test_file_plumbing_refuses_non_regular_files_and_oversize_reads(tmp_path: Path) -> None:
    from regionshards.shards._fs import NotARegularFile, file_problem, open_regular, read_capped, read_regular
    from regionshards.shards.validate import check_summary

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(NotARegularFile, match="a FIFO"):
        open_regular(fifo)  # returns at once: O_NONBLOCK, then fstat
    assert file_problem(fifo) == "a FIFO" and file_problem(tmp_path / "nope") == "missing"
    assert file_problem(tmp_path) == "a folder"
    big = tmp_path / "big"
    big.write_bytes(b"x" * 5000)
    with pytest.raises(ValueError, match="5000 bytes > limit of 4096"):
        read_regular(big, 4096)
    with open(big, "rb") as f, pytest.raises(ValueError, match="more than 100 bytes"):
        read_capped(f, 100, "big")
    assert read_regular(big, 5000) == b"x" * 5000
    assert check_summary({"wall_seconds": 1, "images_per_second": 2.5, "cpus": 2}) == []
    assert check_summary([]) == ["a JSON list, not an object"]
    assert check_summary({"wall_seconds": 10**400, "images_per_second": True, "cpus": 1, "core_seconds": []}) == [
        f"wall_seconds is {'1' + '0' * 39}, not a number", "images_per_second is True, not a number",
        "core_seconds is not an object of numbers"]


def test_verify_names_a_fifo_index(dataset_copy: Path) -> None:
    index = dataset_copy / "shard-000001.parquet"
    index.unlink()
    os.mkfifo(index)
    report = verify(dataset_copy)
    assert ("not-regular-file", "shard-000001.parquet") in [(f.code, f.shard) for f in report.findings]


def test_an_index_with_invalid_utf8_is_a_finding_not_a_crash(dataset_copy: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fixtures.tampering import reseal
    from regionshards.report.dataset import find_samples, open_report_dataset
    from regionshards.shards.index import index_bytes

    path = dataset_copy / "shard-000000.parquet"
    table = pq.read_table(path)
    keys = table.column("key").combine_chunks()
    validity, offsets, data = keys.buffers()
    broken = bytearray(data.to_pybytes())
    broken[0] = 0xB3  # not a UTF-8 start byte
    column = pa.StringArray.from_buffers(len(keys), offsets, pa.py_buffer(bytes(broken)), validity)
    table = table.set_column(table.schema.get_field_index("key"), table.schema.field("key"), column)
    path.write_bytes(index_bytes(table))
    reseal(dataset_copy)
    assert ("index-invalid", "shard-000000.parquet") in [(f.code, f.shard) for f in verify(dataset_copy).findings]
    with pytest.raises(ValueError, match="shard-000000.parquet: index data is damaged"):
        find_samples(open_report_dataset(dataset_copy), ["animal_chelsea"])


def test_every_flipped_bit_of_an_index_is_a_value_error(tiny_dataset: Path, tmp_path: Path) -> None:
    """pyarrow refuses damaged Parquet with several exception kinds (ArrowInvalid, ArrowNotImplementedError
    for a flipped type width, OSError): ``read_index`` turns each into one ValueError naming the file."""
    from regionshards.shards.index import read_index

    original = (tiny_dataset / "shard-000000.parquet").read_bytes()
    target = tmp_path / "shard-000000.parquet"
    kinds = set()
    for pos in range(len(original)):
        damaged = bytearray(original)
        damaged[pos] ^= 1 << (pos % 8)
        target.write_bytes(bytes(damaged))
        try:
            read_index(target)
        except ValueError as exc:
            assert str(target) in str(exc)
            kinds.add("refused")
    assert "refused" in kinds
