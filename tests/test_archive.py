"""Loading tar archives into a FileTree: every member kind kept, unsafe members refused."""

from __future__ import annotations

import io
import tarfile

import pytest

from composer.archive import load_tar
from composer.errors import ArchiveError
from composer.tree import EntryType, FileTree


def make_tar(members: list[tuple[tarfile.TarInfo, bytes | None]], *, gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return buf.getvalue()


def info(name: str, kind: bytes = tarfile.REGTYPE, **kw: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def load(data: bytes) -> FileTree:
    tree = FileTree()
    load_tar(io.BytesIO(data), tree, source="test.tar")
    return tree


def test_every_member_kind_is_kept_exactly() -> None:
    data = make_tar([
        (info("./", tarfile.DIRTYPE, mode=0o755), None),
        (info("./tmp", tarfile.DIRTYPE, mode=0o1777), None),
        (info("./bin", tarfile.DIRTYPE, mode=0o755), None),
        (info("./bin/su", mode=0o4755, uid=0, gid=0), b"setuid"),
        (info("./bin/sh", tarfile.SYMTYPE, linkname="/bin/busybox", mode=0o777), None),
        (info("./bin/ln", tarfile.LNKTYPE, linkname="./bin/su", mode=0o4755), None),
        (info("./dev", tarfile.DIRTYPE, mode=0o755), None),
        (info("./dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666), None),
        (info("./dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o660, gid=6), None),
        (info("./run.fifo", tarfile.FIFOTYPE, mode=0o600), None),
        (info("./home/u/f", mode=0o600, uid=1000, gid=1000,
              pax_headers={"SCHILY.xattr.user.k": "v"}), b"data"),
    ], gz=True)
    tree = load(data)
    assert tree.get("tmp").mode == 0o1777
    su = tree.get("bin/su")
    assert (su.type, su.mode, su.blob.read()) == (EntryType.FILE, 0o4755, b"setuid")
    ln = tree.get("bin/ln")
    assert ln.link_id == su.link_id != 0 and ln.blob is su.blob
    assert tree.get("bin/sh").target == "/bin/busybox"
    null = tree.get("dev/null")
    assert (null.type, null.devmajor, null.devminor, null.mode) == (EntryType.CHAR, 1, 3, 0o666)
    assert tree.get("dev/sda").type == EntryType.BLOCK and tree.get("dev/sda").gid == 6
    assert tree.get("run.fifo").type == EntryType.FIFO
    f = tree.get("home/u/f")
    assert (f.uid, f.gid, f.xattrs) == (1000, 1000, (("user.k", b"v"),))
    assert tree.get("home").type == EntryType.DIR  # missing parents are created


@pytest.mark.parametrize(("members", "message"), [
    ([(info("../etc/passwd"), b"x")], "test.tar: member '../etc/passwd' contains '..'"),
    ([(info("/etc/passwd"), b"x")], "test.tar: member '/etc/passwd' is absolute"),
    ([(info("a/../../b"), b"x")], "test.tar: member 'a/../../b' contains '..'"),
    ([(info("evil", tarfile.SYMTYPE, linkname="/etc"), None), (info("evil/passwd"), b"x")],
     "test.tar: member 'evil/passwd' passes through symlink 'evil' -> '/etc'"),
    ([(info("a/b", tarfile.SYMTYPE, linkname="../../../etc/shadow"), None)],
     "test.tar: symlink 'a/b' -> '../../../etc/shadow' escapes the root"),
    ([(info("x", tarfile.LNKTYPE, linkname="nowhere"), None)],
     "test.tar: hard link 'x' points to 'nowhere', which is not an earlier regular file"),
    ([(info("f"), b"one"), (info("f"), b"two")],
     "test.tar: member 'f' appears twice with different contents"),
    ([(info("f"), b"one"), (info("f/g"), b"two")],
     "test.tar: member 'f/g' is below 'f', which is not a directory"),
])
def test_unsafe_members_are_refused(members: list, message: str) -> None:
    with pytest.raises(ArchiveError) as err:
        load(make_tar(members))
    assert str(err.value).startswith(message)


def test_identical_duplicates_are_accepted() -> None:
    tree = load(make_tar([(info("f", mode=0o644), b"same"), (info("f", mode=0o644), b"same")]))
    assert tree.read_file("f") == b"same"


@pytest.mark.parametrize("data", [b"", b"not a tar at all" * 100, b"\x1f\x8b\x08\x00garbage"])
def test_non_tar_data_is_an_archive_error(data: bytes) -> None:
    with pytest.raises(ArchiveError, match=r"^test\.tar: "):
        load(data)


def test_truncated_archive_is_an_archive_error() -> None:
    data = make_tar([(info("big"), b"x" * 100_000)])
    with pytest.raises(ArchiveError, match=r"^test\.tar: "):
        load(data[:20_000])
