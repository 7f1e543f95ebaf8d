"""The deterministic tar writer: golden bytes, round trips, GNU tar agreement."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile

from hypothesis import given, settings
from hypothesis import strategies as st

from composer.archive import load_tar
from composer.tree import Entry, EntryType, FileTree
from composer.writers.tar import LAYER_STYLE, ROOTFS_STYLE, write_tar

EPOCH = 1_700_000_000


def sample_tree() -> FileTree:
    tree = FileTree()
    tree.add_dir("tmp", mode=0o1777)
    tree.add_file("bin/busybox", b"\x7fELF" + b"\0" * 600, mode=0o755, mtime=5)
    tree.add_file("bin/bbsuid", b"suid", mode=0o4755)
    tree.add_symlink("bin/sh", "/bin/busybox")
    su = tree.add_file("usr/bin/a", b"linked", mode=0o755)
    link_id = tree.new_link_id()
    tree.put(su.with_changes(link_id=link_id))
    tree.put(su.with_changes(path="usr/bin/b", link_id=link_id))
    tree.put(Entry(path="dev/null", type=EntryType.CHAR, mode=0o666, devmajor=1, devminor=3))
    tree.put(Entry(path="run/fifo", type=EntryType.FIFO, mode=0o600))
    tree.add_file("home/user/.profile", b"export A=1\n", mode=0o600, uid=1000, gid=1000)
    tree.put(Entry(path="usr/bin/ping", type=EntryType.FILE, mode=0o755,
                   blob=tree.store.from_bytes(b"ping"),
                   xattrs=(("security.capability", b"\x01\x00\x00\x02"),)))
    tree.add_file("a/" + "long-name-" * 20 + "end", b"long")
    return tree


def render(tree: FileTree, **kw: object) -> bytes:
    buf = io.BytesIO()
    write_tar(tree, buf, mtime=EPOCH, **kw)  # type: ignore[arg-type]
    return buf.getvalue()


def test_golden_bytes() -> None:
    """Any change to the bytes we write must be deliberate: update this digest knowingly."""
    data = render(sample_tree())
    assert len(data) % 10240 == 0
    assert hashlib.sha256(data).hexdigest() == GOLDEN_ROOTFS


GOLDEN_ROOTFS = "07d50901c778dbbde7b50999e1a820499464eb5b46767c6385e01dabda686aff"


def test_members_sorted_stamped_and_numeric() -> None:
    data = render(sample_tree())
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names[0] == "."  # tarfile strips the trailing slash of "./"
    stripped = [n.removeprefix(".").removeprefix("/") for n in names]
    assert stripped == sorted(stripped, key=lambda s: s.encode())
    assert {m.mtime for m in members} == {EPOCH}
    assert {(m.uname, m.gname) for m in members} == {("", "")}
    by_name = {m.name: m for m in members}
    assert by_name["./usr/bin/b"].type == tarfile.LNKTYPE
    assert by_name["./usr/bin/b"].linkname == "./usr/bin/a"
    assert by_name["./bin/bbsuid"].mode == 0o4755
    assert by_name["./dev/null"].isdev() and by_name["./dev/null"].devminor == 3
    assert by_name["./usr/bin/ping"].pax_headers == {
        "SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}
    for m in members:
        assert "atime" not in m.pax_headers and "ctime" not in m.pax_headers


def test_gnu_tar_reads_it_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    archive = tmp_path / "x.tar"
    archive.write_bytes(render(sample_tree(), style=LAYER_STYLE))
    listing = subprocess.run(["tar", "--numeric-owner", "-tvf", archive], check=True,
                             capture_output=True, text=True).stdout
    assert "usr/bin/b link to usr/bin/a" in listing
    assert "1000/1000" in listing
    assert not any(line.endswith(" ./") for line in listing.splitlines())


def test_round_trip_keeps_everything() -> None:
    tree = sample_tree()
    again = FileTree()
    load_tar(io.BytesIO(render(tree)), again, source="rt")
    assert _describe(again) == _describe(tree)


def _describe(tree: FileTree) -> list[tuple[object, ...]]:
    return [(e.path, e.type, e.mode, e.uid, e.gid, e.target, e.devmajor, e.devminor, e.xattrs,
             e.blob.sha256 if e.blob else None, bool(e.link_id)) for e in tree.walk()]


names = st.text(alphabet="abcXY.-_é", min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.lists(names, min_size=1, max_size=3).map("/".join),
                       st.tuples(st.binary(max_size=700), st.integers(0, 0o7777),
                                 st.integers(0, 70000)), max_size=12))
def test_round_trip_property(files: dict[str, tuple[bytes, int, int]]) -> None:
    tree = FileTree()
    for path, (data, mode, uid) in files.items():
        try:
            tree.add_file(path, data, mode=mode, uid=uid, gid=uid)
        except Exception:
            continue  # a path below an earlier file: not a valid tree
    first = render(tree)
    again = FileTree()
    load_tar(io.BytesIO(first), again, source="rt")
    assert _describe(again) == _describe(tree)
    assert render(again) == first


def test_insertion_order_does_not_matter() -> None:
    a, b = FileTree(), FileTree()
    paths = [f"d{i % 3}/f{i}" for i in range(20)]
    for p in paths:
        a.add_file(p, p.encode())
    for p in reversed(paths):
        b.add_file(p, p.encode())
    assert render(a) == render(b)
    assert render(a, style=ROOTFS_STYLE) != render(a, style=LAYER_STYLE)
