"""FileTree: normalised paths, sorted walks, bounded memory."""

from __future__ import annotations

import io

import pytest

from composer.errors import ArchiveError
from composer.tree import BlobStore, EntryType, FileTree, normalize_path, resolve_symlink_target


@pytest.mark.parametrize(("raw", "expected"), [
    ("./a/b", "a/b"), ("a//b/", "a/b"), (".", ""), ("./", ""), ("a/./b", "a/b")])
def test_normalize_path(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


def test_walk_is_sorted_by_bytes_with_parents_first() -> None:
    tree = FileTree()
    for path in ["b", "a-b", "a/z", "a/b", "A", "a.b"]:
        tree.add_file(path, path.encode())
    assert [e.path for e in tree.walk()] == ["", "A", "a", "a-b", "a.b", "a/b", "a/z", "b"]


def test_remove_directory_removes_children() -> None:
    tree = FileTree()
    tree.add_file("etc/x/y", b"1")
    tree.add_file("etc/z", b"2")
    assert sorted(tree.remove("etc/x")) == ["etc/x", "etc/x/y"]
    assert "etc/z" in tree and "etc/x/y" not in tree


def test_replacing_a_non_empty_directory_with_a_file_is_refused() -> None:
    tree = FileTree()
    tree.add_file("d/f", b"1")
    with pytest.raises(ArchiveError, match="would replace a non-empty directory"):
        tree.add_file("d", b"2")


def test_large_blobs_spill_to_disk_and_memory_stays_bounded() -> None:
    store = BlobStore(spill_threshold=2048, memory_budget=4096)
    small = store.from_bytes(b"a" * 1000)
    big = store.from_bytes(b"b" * 5000)
    streamed = store.from_stream(io.BytesIO(b"c" * 2000), 2000)
    over_budget = store.from_bytes(b"d" * 1500)
    assert small.in_memory and streamed.in_memory and not big.in_memory
    assert not over_budget.in_memory  # 1000 + 2000 + 1500 > 4096
    assert big.read() == b"b" * 5000 and over_budget.read() == b"d" * 1500
    assert store.in_memory_bytes <= 4096
    store.close()


def test_short_stream_is_an_error() -> None:
    with pytest.raises(ArchiveError, match="content ended after 3 of 10 bytes"):
        BlobStore().from_stream(io.BytesIO(b"abc"), 10)


@pytest.mark.parametrize(("link", "target", "expected"), [
    ("bin/sh", "/bin/busybox", "bin/busybox"),
    ("usr/lib/x", "../../lib/y", "lib/y"),
    ("a", "../../..", None),
    ("a/b", "/../../etc", "etc"),
])
def test_resolve_symlink_target(link: str, target: str, expected: str | None) -> None:
    assert resolve_symlink_target(link, target) == expected


def test_entry_st_mode_combines_type_and_permissions() -> None:
    tree = FileTree()
    entry = tree.add_file("f", b"", mode=0o4755)
    assert entry.st_mode == 0o104755 and entry.type == EntryType.FILE


class _Trickle(io.RawIOBase):
    """Hands out at most ``step`` bytes per read, as a chunked reader may."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        want = self._step if size < 0 else min(size, self._step)
        piece, self._data = self._data[:want], self._data[want:]
        return bytes(piece)


@pytest.mark.parametrize("size", [1, 1000, 64 * 1024, 300 * 1024])
def test_short_reads_still_fill_the_blob(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    store = BlobStore(spill_threshold=128 * 1024)
    try:
        blob = store.from_stream(_Trickle(data, 4097), size)  # type: ignore[arg-type]
        assert blob.read() == data
        assert blob.in_memory == (size <= 128 * 1024)
        with pytest.raises(ArchiveError, match=f"content ended after {size} of {size + 1}"):
            store.from_stream(_Trickle(data, 4097), size + 1)  # type: ignore[arg-type]
    finally:
        store.close()


def test_chunks_cover_the_content_wherever_it_lives() -> None:
    store = BlobStore(spill_threshold=16, memory_budget=64)
    try:
        small = store.from_bytes(b"small")
        big = store.from_bytes(bytes(range(256)) * 40)
        assert (small.in_memory, big.in_memory) == (True, False)
        assert list(small.chunks()) == [b"small"]
        assert [len(c) for c in big.chunks(4000)] == [4000, 4000, 2240]
        assert b"".join(big.chunks(4000)) == bytes(range(256)) * 40
    finally:
        store.close()
