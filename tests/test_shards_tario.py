"""Deterministic ustar writing and strict, safe tar reading."""

from __future__ import annotations

import io
import tarfile

import pytest

from regionshards.shards.tario import (
    BLOCK,
    RECORD,
    ShardError,
    TarStreamWriter,
    check_member_name,
    iter_members,
    ustar_header,
)


def _write(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    w = TarStreamWriter(buf)
    for name, data in members:
        w.add(name, data)
    w.close()
    return buf.getvalue()


def _tar_with(*infos: tuple[tarfile.TarInfo, bytes | None], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    """A tar built by Python's tarfile (the way a foreign or hostile writer would make one)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in infos:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def test_header_equals_tarfiles_ustar_header() -> None:
    for name, size in [("k.json", 0), ("a-b_c.jpg", 123_456), ("x" * 80 + ".tiff", 8**11 - 1)]:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, 0, 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        assert ustar_header(name, size) == info.tobuf(tarfile.USTAR_FORMAT, "ascii", "strict")


def test_written_tar_reads_back_with_fixed_metadata() -> None:
    members = [("a.jpg", b"\xff\xd8" + bytes(700)), ("a.json", b"{}"), ("b.json", b"")]
    raw = _write(members)
    assert len(raw) % RECORD == 0
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        infos = tar.getmembers()
        assert [(i.name, tar.extractfile(i).read()) for i in infos] == members
        assert {(i.mtime, i.uid, i.gid, i.uname, i.gname, i.mode, i.type) for i in infos} == {
            (0, 0, 0, "root", "root", 0o644, tarfile.REGTYPE)
        }
    got = list(iter_members(io.BytesIO(raw), "s.tar"))
    assert [(m.name, m.data) for m in got] == members
    assert [m.data_offset for m in got] == [512, 512 + 1024 + 512, 512 + 1024 + 512 + 512 + 512]
    assert all(m.header_offset == m.data_offset - BLOCK for m in got)


def test_too_long_or_non_ascii_names_are_refused_when_writing() -> None:
    with pytest.raises(ValueError, match="1..100 ASCII"):
        ustar_header("x" * 101, 0)
    with pytest.raises(UnicodeEncodeError):
        ustar_header("café.json", 0)


def test_damaged_header_after_the_first_is_an_error_not_an_early_end() -> None:
    raw = bytearray(_write([("a.json", b"1"), ("b.json", b"2"), ("c.json", b"3")]))
    raw[2 * BLOCK + 5] ^= 0x01  # inside b.json's header name
    # tarfile in stream mode (what webdataset uses) stops quietly and loses b and c:
    with tarfile.open(fileobj=io.BytesIO(bytes(raw)), mode="r|") as tar:
        assert [i.name for i in tar] == ["a.json"]
    with pytest.raises(ShardError, match="fails its checksum") as info:
        list(iter_members(io.BytesIO(bytes(raw)), "s.tar"))
    assert (info.value.code, info.value.shard, info.value.member) == ("bad-header", "s.tar", "a.json")


@pytest.mark.parametrize("cut", [BLOCK + 1, 3 * BLOCK - 3, 3 * BLOCK + 100, 4 * BLOCK, 4 * BLOCK + 1])
def test_truncation_is_detected_and_names_the_member(cut: int) -> None:
    raw = _write([("a.json", b"x" * 600), ("b.json", b"y")])  # a: header + 2 blocks; b: header + 1 block
    with pytest.raises(ShardError) as info:
        list(iter_members(io.BytesIO(raw[:cut]), "s.tar"))
    assert info.value.code == "truncated"
    # A cut inside b's header names the last whole member; a cut inside b's data names b.
    assert info.value.member == ("a.json" if cut < 4 * BLOCK else "b.json")


def test_empty_input_is_truncated_and_an_empty_archive_is_fine() -> None:
    with pytest.raises(ShardError, match="truncated"):
        list(iter_members(io.BytesIO(b""), "s.tar"))
    assert list(iter_members(io.BytesIO(_write([])), "s.tar")) == []


def _info(name: str, kind: bytes = tarfile.REGTYPE, **attrs) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for k, v in attrs.items():
        setattr(info, k, v)
    return info


@pytest.mark.parametrize(
    ("info", "data", "code"),
    [
        (_info("k.jpg", tarfile.SYMTYPE, linkname="/etc/passwd"), None, "link"),
        (_info("k.jpg", tarfile.LNKTYPE, linkname="a.jpg"), None, "link"),
        (_info("k.jpg", tarfile.CHRTYPE, devmajor=1, devminor=3), None, "device"),
        (_info("k.jpg", tarfile.BLKTYPE, devmajor=8, devminor=0), None, "device"),
        (_info("k/", tarfile.DIRTYPE), None, "not-regular-file"),
        (_info("k.jpg", tarfile.FIFOTYPE), None, "not-regular-file"),
        (_info("../evil.json"), b"{}", "path-traversal"),
        (_info("k/../../evil.json"), b"{}", "path-traversal"),
        (_info("/etc/evil.json"), b"{}", "absolute-name"),
        (_info("dir/k.json"), b"{}", "bad-name"),
        (_info("k"), b"x", "bad-name"),
        (_info("k.a.b.c.d.e.f.g.h.i"), b"x", "bad-name"),
        (_info("k.pyd"), b"x", "pickle-extension"),
        (_info("k.PKL"), b"x", "pickle-extension"),
        (_info("k.pickle"), b"x", "pickle-extension"),
        (_info("k.pth"), b"x", "pickle-extension"),
        (_info("k.pt"), b"x", "pickle-extension"),
        (_info("k.pt.gz"), b"x", "pickle-extension"),
        (_info("k.json"), b"x" * 2000, "oversize"),
    ],
)
def test_refused_members_come_back_with_an_error_and_no_data(info, data, code) -> None:
    raw = _tar_with((_info("a.json"), b"{}"), (info, data), (_info("z.json"), b"[]"))
    got = list(iter_members(io.BytesIO(raw), "s.tar", max_member_bytes=1000))
    assert [m.name for m in got] == ["a.json", info.name, "z.json"]
    bad = got[1]
    assert bad.data is None and bad.error is not None
    assert (bad.error.code, bad.error.shard, bad.error.member) == (code, "s.tar", info.name)
    assert got[2].data == b"[]" and got[2].error is None  # reading goes on after a refused member


def test_pax_and_gnu_long_names_from_other_writers_are_understood() -> None:
    pax = _tar_with((_info("k.json", pax_headers={"comment": "made elsewhere"}), b"{}"), fmt=tarfile.PAX_FORMAT)
    assert [(m.name, m.data) for m in iter_members(io.BytesIO(pax), "s.tar")] == [("k.json", b"{}")]
    long_name = "k" * 70 + ".json"
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        raw = _tar_with((_info("d" * 120 + "/" + long_name), b"{}"), fmt=fmt)
        (m,) = iter_members(io.BytesIO(raw), "s.tar")
        assert m.name == "d" * 120 + "/" + long_name and m.error is not None and m.error.code == "bad-name"


def test_check_member_name_accepts_format_names() -> None:
    for name in ("k.json", "000000397133.jpg", "a-b_c.seg.json"):
        assert check_member_name(name, "s.tar") is None


def test_undecodable_and_control_character_names_are_refused_and_reported_safely() -> None:
    from regionshards.shards.checks import Finding

    info = tarfile.TarInfo("x")
    info.size = 2
    header = bytearray(info.tobuf(tarfile.USTAR_FORMAT, "ascii", "strict"))
    header[:8] = b"k\xff\nz.jso"  # invalid UTF-8 and a newline
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\x00 " % sum(header)
    raw = bytes(header) + b"{}" + bytes(510) + bytes(1024)
    (m,) = iter_members(io.BytesIO(raw), "s.tar")
    assert m.error is not None and m.error.code == "bad-name" and "\\xff" in m.name
    text = str(Finding(m.error.code, "s.tar", m.name, m.error.detail))
    assert "\n" not in text and "\\n" in text
