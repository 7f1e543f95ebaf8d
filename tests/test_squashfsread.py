"""The squashfs reader: reads back exactly what composer's writer and mksquashfs wrote, and
turns every damaged or hostile image into one ArchiveError within its bounds."""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from composer.archive import load_tar
from composer.errors import ArchiveError
from composer.squashfsread import SquashEntry, SquashLimits, read_squashfs
from composer.tree import EntryType, FileTree
from composer.writers.squashfs import write_squashfs
from tests.writers.oci_trees import MINIROOTFS
from tests.writers.squashfs_trees import full_tree, with_xattrs

MTIME = 1725622440
_TYPES = {EntryType.FILE: "file", EntryType.DIR: "dir", EntryType.SYMLINK: "symlink",
          EntryType.CHAR: "char", EntryType.BLOCK: "block", EntryType.FIFO: "fifo"}


def _image(tree: FileTree, **options: object) -> bytes:
    out = io.BytesIO()
    write_squashfs(tree, out, mtime=MTIME, **options)  # type: ignore[arg-type]
    return out.getvalue()


def _expected(tree: FileTree, *, mtime: int | None = MTIME) -> dict[str, tuple[object, ...]]:
    links = {k: len(v) for k, v in tree.hardlink_groups().items()}
    subdirs: dict[str, int] = {}
    for e in tree.walk():
        if e.path and e.type == EntryType.DIR:
            parent = e.path.rpartition("/")[0]
            subdirs[parent] = subdirs.get(parent, 0) + 1
    result: dict[str, tuple[object, ...]] = {}
    for e in tree.walk():
        kind = _TYPES[e.type]
        nlink = (2 + subdirs.get(e.path, 0) if kind == "dir"
                 else links.get(e.link_id, 1) if e.link_id else 1)
        result["/" + e.path] = (
            kind, e.mode, e.uid, e.gid,
            e.size if kind == "file" else len(e.target.encode()) if kind == "symlink" else 0,
            hashlib.sha256(tree.read_file(e.path)).hexdigest() if kind == "file" else "",
            e.target, (e.devmajor, e.devminor) if kind in ("char", "block") else None,
            nlink, mtime, e.xattrs)
    return result


def _got(entries: tuple[SquashEntry, ...], *, mtime: bool = True) -> dict[str, tuple[object, ...]]:
    return {e.path: (e.type, e.mode, e.uid, e.gid, e.size, e.sha256, e.target, e.rdev, e.nlink,
                     e.mtime if mtime else None, e.xattrs) for e in entries}


@pytest.mark.parametrize(("compression", "block_size"), [("gzip", 131072), ("gzip", 4096),
                                                         ("none", 8192)])
def test_reads_back_what_the_writer_wrote(compression: str, block_size: int) -> None:
    tree = with_xattrs(full_tree())
    tree.add_file("srv/holes", b"x" * 5000 + bytes(300000) + b"y")
    for i in range(700):
        tree.add_file(f"many/{i:04d}-" + "n" * (i % 90), str(i).encode())
    data = _image(tree, compression=compression, block_size=block_size)
    image = read_squashfs(io.BytesIO(b"head" + data), source="fs.img", offset=4)
    assert (image.compression, image.block_size, image.mtime) == ("gzip", block_size, MTIME)
    assert image.inodes == len(tree) - 1  # the two hard links share one inode
    assert _got(image.entries) == _expected(tree)
    assert [e.path for e in image.entries][:3] == ["/", "/bin", "/bin/busybox"]


@pytest.mark.slow
def test_reads_what_mksquashfs_wrote(tmp_path: Path) -> None:
    """An independent writer: squashfs-tools' image of the real minirootfs reads as the tree
    (mksquashfs 4.5.1 gives the root 0777 and keeps each member's own mtime)."""
    if shutil.which("mksquashfs") is None:
        pytest.skip("mksquashfs is not installed (apt-get install squashfs-tools)")
    if not MINIROOTFS.is_file():
        pytest.skip(f"real Alpine fixtures not found at {MINIROOTFS}")
    tar = gzip.decompress(MINIROOTFS.read_bytes())
    tree = FileTree()
    load_tar(io.BytesIO(tar), tree, source="minirootfs")
    subprocess.run(["mksquashfs", "-", str(tmp_path / "ref.img"), "-tar", "-comp", "gzip",
                    "-noappend", "-quiet", "-no-progress"], input=tar, capture_output=True,
                   check=True)
    with (tmp_path / "ref.img").open("rb") as fh:
        theirs = read_squashfs(fh, source="ref.img")
    expected = _expected(tree, mtime=None)
    expected["/"] = ("dir", 0o777, *expected["/"][2:])
    assert _got(theirs.entries, mtime=False) == expected
    assert _got(read_squashfs(io.BytesIO(_image(tree)), source="ours").entries,
                mtime=False) == _expected(tree, mtime=None)


def test_bounds_stop_the_work() -> None:
    data = _image(full_tree())
    with pytest.raises(ArchiveError) as caught:
        read_squashfs(io.BytesIO(data), source="fs.img", limits=SquashLimits(max_entries=5))
    assert str(caught.value) == "fs.img: squashfs: more than 5 entries"
    with pytest.raises(ArchiveError) as caught:
        read_squashfs(io.BytesIO(data), source="fs.img", limits=SquashLimits(max_bytes=4000))
    assert str(caught.value) == "fs.img: squashfs: more than 4000 bytes to inflate and hash"
    with pytest.raises(ArchiveError) as caught:
        read_squashfs(io.BytesIO(data), source="fs.img", limits=SquashLimits(max_depth=1))
    assert str(caught.value) == "fs.img: squashfs: directory /home/user is deeper than 1"


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: d[:50], "fs.img: squashfs: 50 bytes are too few for a superblock"),
    (lambda d: b"x" + d[1:], "fs.img: squashfs: no squashfs superblock (bad magic)"),
    (lambda d: d[:20] + b"\x04\x00" + d[22:], "fs.img: squashfs: compressor id 4 (only gzip, "
                                              "id 1, is read)"),
    (lambda d: d[:40] + (10**6).to_bytes(8, "little") + d[48:],
     "fs.img: squashfs: tables out of order or past the end (inodes 3591, directories 3977, "
     "used 1000000, image 8192)"),
])
def test_damage_is_named(damage: Callable[[bytes], bytes], message: str) -> None:
    data = _image(full_tree())
    with pytest.raises(ArchiveError) as caught:
        read_squashfs(io.BytesIO(damage(data)), source="fs.img")
    assert str(caught.value) == message


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
       st.sampled_from(["gzip", "none"]))
def test_flipped_bytes_give_an_archive_error_or_a_reading(flips: list[tuple[int, int]],
                                                          compression: str) -> None:
    data = bytearray(_CLEAN[compression])
    for where, value in flips:
        data[where % len(data)] = value
    try:
        image = read_squashfs(io.BytesIO(bytes(data)), source="fs.img",
                              limits=SquashLimits(max_bytes=4 << 20))
    except ArchiveError as exc:
        assert str(exc).startswith("fs.img: squashfs: ")
    else:
        assert image.entries[0].path == "/"


_CLEAN = {compression: _image(full_tree(), compression=compression, block_size=4096)
          for compression in ("gzip", "none")}
