"""The deterministic tar writer: golden bytes, round trips, GNU tar agreement."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from composer.archive import load_tar
from composer.tree import Blob, Entry, EntryType, FileTree
from composer.writers.tar import LAYER_STYLE, ROOTFS_STYLE, tar_header, write_tar
from tests.writers.oci_trees import mirrored_trees

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
    a, b = mirrored_trees(20)
    assert render(a) == render(b)
    assert render(a, style=ROOTFS_STYLE) != render(a, style=LAYER_STYLE)


def tarfile_header(entry: Entry, name: str, mtime: int, linkname: str, hardlink: bool) -> bytes:
    """The reference: what Python's tarfile writes for the same member in PAX format."""
    info = tarfile.TarInfo(name)
    info.mtime, info.mode, info.uid, info.gid = mtime, entry.mode, entry.uid, entry.gid
    info.uname = info.gname = ""
    types = {EntryType.FILE: tarfile.REGTYPE, EntryType.DIR: tarfile.DIRTYPE,
             EntryType.SYMLINK: tarfile.SYMTYPE, EntryType.CHAR: tarfile.CHRTYPE,
             EntryType.BLOCK: tarfile.BLKTYPE, EntryType.FIFO: tarfile.FIFOTYPE}
    info.type = tarfile.LNKTYPE if hardlink else types[entry.type]
    info.size = entry.size if entry.type == EntryType.FILE and not hardlink else 0
    info.linkname = linkname if hardlink else entry.target if entry.type == EntryType.SYMLINK else ""
    if entry.type in (EntryType.CHAR, EntryType.BLOCK) and not hardlink:
        info.devmajor, info.devminor = entry.devmajor, entry.devminor
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


NAMES = st.one_of(st.text(alphabet="abc/._-", min_size=1, max_size=120),
                  st.text(min_size=1, max_size=40).filter(lambda s: "\0" not in s))


@settings(max_examples=400, deadline=None)
@given(name=NAMES, kind=st.sampled_from(list(EntryType)), hardlink=st.booleans(),
       mode=st.integers(0, 0o7777), uid=st.sampled_from([0, 1000, 8**7 - 1, 8**7, 2**31]),
       size=st.sampled_from([0, 1, 8**11 - 1, 8**11]), mtime=st.sampled_from([0, EPOCH, 8**11]),
       target=NAMES, dev=st.sampled_from([0, 8, 259, 8**7]))
def test_headers_are_what_tarfile_writes(name: str, kind: EntryType, hardlink: bool, mode: int,
                                         uid: int, size: int, mtime: int, target: str,
                                         dev: int) -> None:
    """The plain ustar fast path and tarfile agree byte for byte, PAX fallbacks included."""
    blob = Blob(data=None, path=None, size=size) if kind == EntryType.FILE else None
    entry = Entry(path="p", type=kind, mode=mode, uid=uid, gid=uid // 2, blob=blob,
                  target=target if kind == EntryType.SYMLINK else "", devmajor=dev,
                  devminor=dev // 3)
    hard = hardlink and kind == EntryType.FILE

    def outcome(make: Callable[[], bytes]) -> bytes | str:
        try:
            return make()
        except ValueError as exc:  # a device number tar cannot hold: both refuse it
            return str(exc)

    assert outcome(lambda: tar_header(entry, name=name, mtime=mtime, linkname=target,
                                      hardlink=hard)) == \
        outcome(lambda: tarfile_header(entry, name, mtime, target, hard))
