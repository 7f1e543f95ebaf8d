"""The bounded JSON loader: every hostile shape is one ComposerError naming the document."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from composer.errors import ArchiveError, ComposerError, VerificationError
from composer.jsonsafe import MAX_DEPTH, load_json, load_json_file, read_regular_file


def test_reads_values_through_typed_accessors() -> None:
    doc = load_json(b'{"a": {"b": [1, "x", true]}, "n": null}', what="m.json")
    items = list(doc.field("a").field("b").items())
    assert items[0].int() == 1
    assert items[1].str() == "x"
    assert items[2].bool() is True
    assert doc.optional("n") is None
    assert doc.optional("missing") is None


@pytest.mark.parametrize(("data", "message"), [
    (b"[" * 100_000 + b"]" * 100_000, f"m.json: JSON nested more than {MAX_DEPTH} levels deep"),
    (b'{"a": ' + b"9" * 5000 + b"}", "m.json: not valid JSON (number of 5000 characters (at most 24))"),
    (b'{"a": 1e999}', "m.json: not valid JSON (number 1e999 out of range)"),
    (b'{"a": NaN}', "m.json: not valid JSON (NaN is not JSON)"),
    (b'{"a": 1, "a": 2}', "m.json: not valid JSON (duplicate key 'a')"),
    (b"\xff", "m.json: not UTF-8 at byte 0"),
    (b"{", "m.json: not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"),
])
def test_hostile_documents_are_one_line_errors(data: bytes, message: str) -> None:
    with pytest.raises(ArchiveError) as info:
        load_json(data, what="m.json")
    assert str(info.value) == message


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    assert load_json(b'{"a": "' + b"[" * 1000 + b'"}', what="x").field("a").str() == "[" * 1000


def test_size_cap_and_error_class() -> None:
    with pytest.raises(VerificationError, match="x: 11 bytes of JSON, more than the 10 allowed"):
        load_json(b'"aaaaaaaaa"', what="x", max_bytes=10, error=VerificationError)


@pytest.mark.parametrize(("data", "read", "message"), [
    (b'{"a": [1]}', lambda d: d.field("a").str(), "m: $.a: expected a string, found an array"),
    (b'{"a": true}', lambda d: d.field("a").int(), "m: $.a: expected an integer, found a boolean"),
    (b'{"a": -1}', lambda d: d.field("a").int(), "m: $.a: -1 is outside 0..9223372036854775807"),
    (b'[{"b": 1}]', lambda d: list(d.items())[0].field("c"), "m: $[0]: missing 'c'"),
    (b'"' + b"x" * 300 + b'"', lambda d: d.str(max_len=255), "m: $: string of 300 characters, more than 255"),
    (b"[1, 2, 3]", lambda d: list(d.items(max_items=2)), "m: $: 3 entries, more than the 2 allowed"),
])
def test_wrong_shapes_name_the_field(data: bytes, read: object, message: str) -> None:
    doc = load_json(data, what="m")
    with pytest.raises(ArchiveError) as info:
        read(doc)  # type: ignore[operator]
    assert str(info.value) == message


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_fail_cleanly(data: bytes) -> None:
    try:
        load_json(data, what="fuzz")
    except ComposerError:
        pass


def test_numbers_are_finite_and_keys_in_paths_are_cut() -> None:
    doc = load_json(b'{"t": 1.5, "i": 3, "s": "x", "' + b"k" * 500 + b'": [1]}', what="m")
    assert doc.field("t").number() == 1.5 and doc.field("i").number() == 3.0
    with pytest.raises(ArchiveError, match=r"^m: \$\.s: expected a number, found a string$"):
        doc.field("s").number()
    key, value = list(doc.members())[-1]
    with pytest.raises(ArchiveError) as info:
        value.str()
    assert len(str(info.value)) < 160 and len(key) == 500
    with pytest.raises(ArchiveError, match="4 members, more than the 3 allowed"):
        list(doc.members(max_items=3))


def test_files_are_read_only_when_regular_and_small(tmp_path: Path) -> None:
    good = tmp_path / "m.json"
    good.write_bytes(b'{"a": 1}')
    assert load_json_file(good, what="m").field("a").int() == 1
    with pytest.raises(FileNotFoundError):
        load_json_file(tmp_path / "absent.json", what="x")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(VerificationError, match=r"^f: not a regular file$"):
        read_regular_file(fifo, what="f", max_bytes=10, error=VerificationError)
    with pytest.raises(ArchiveError, match=r"^d: not a regular file$"):
        read_regular_file(tmp_path, what="d", max_bytes=10)
    with pytest.raises(ArchiveError, match=r"^m: 8 bytes, more than the 7 allowed$"):
        read_regular_file(good, what="m", max_bytes=7)
