"""Sample keys: dot-free, stable, derived from the source, unique."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regionshards.shards.keys import (
    DuplicateKeyError,
    check_unique_keys,
    is_valid_key,
    key_from_image_id,
    key_from_path,
    member_sort_key,
)


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("n01440764/n01440764_10026.JPEG", "n01440764_n01440764_10026"),
        ("animal/chelsea.jpg", "animal_chelsea"),
        ("a-b/c_d", "a-b_c_d"),
        ("dir\\file.png", "dir_file"),
    ],
)
def test_plain_paths_map_readably(path: str, key: str) -> None:
    assert key_from_path(path) == key


def test_lossy_names_get_a_stable_hash_and_stay_distinct() -> None:
    dotted = key_from_path("photos/my.cat.v2.jpg")
    # Pinned (sha256 of the path, first 16 hex): keys must not change between versions or machines.
    assert dotted == "photos_my_cat_v2_a57658b684c0f3e6"
    assert "." not in dotted and is_valid_key(dotted)
    assert key_from_path("café.jpg") != key_from_path("cafè.jpg")
    assert key_from_path("猫.png") == key_from_path("猫.png") and is_valid_key(key_from_path("猫.png"))
    assert is_valid_key(key_from_path("_private.jpg")) and is_valid_key(key_from_path("__init__.jpg"))
    assert not key_from_path("__init__.jpg").startswith("_")  # webdataset skips "__...__" names
    long = key_from_path("x" * 300 + ".jpg")
    assert is_valid_key(long) and len(long) <= 80


@pytest.mark.parametrize("bad", ["", "/abs/a.jpg", "../up.jpg", "a/../../b.jpg", "."])
def test_paths_outside_the_root_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="relative"):
        key_from_path(bad)


def test_image_id_keys() -> None:
    assert key_from_image_id(397133) == "000000397133"
    for bad in (-1, 1.5, True, "7"):
        with pytest.raises(ValueError, match="image id"):
            key_from_image_id(bad)  # type: ignore[arg-type]


def test_duplicate_keys_are_refused_naming_both_sources() -> None:
    pairs = [(key_from_path(p), p) for p in ("a/b.jpg", "c.jpg", "a_b.png")]
    with pytest.raises(DuplicateKeyError, match=r"'a_b'.*'a/b\.jpg'.*'a_b\.png'") as info:
        check_unique_keys(pairs)
    assert (info.value.first, info.value.second) == ("a/b.jpg", "a_b.png")
    with pytest.raises(ValueError, match="invalid sample key"):
        check_unique_keys([("a.b", "x")])


_key = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,8}", fullmatch=True)


@given(st.sets(_key, min_size=1, max_size=12), st.lists(st.sampled_from(["jpg", "json", "png"]), min_size=1))
def test_member_sort_key_orders_samples_like_their_member_names(keys: set[str], fields: list[str]) -> None:
    names = sorted(f"{k}.{f}" for k in keys for f in set(fields))
    grouped = []
    for name in names:
        key = name.partition(".")[0]
        if not grouped or grouped[-1] != key:
            grouped.append(key)
    assert grouped == sorted(keys, key=member_sort_key)  # each key's members are contiguous, in this order


@given(st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s))
def test_any_relative_name_gives_a_valid_key_or_a_clear_error(name: str) -> None:
    try:
        key = key_from_path(name)
    except ValueError as exc:
        assert "relative" in str(exc)
    else:
        assert is_valid_key(key) and key == key_from_path(name)
