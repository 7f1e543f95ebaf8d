"""cpio newc writer: exact header bytes, hard links as the kernel reads them, GNU cpio reads it."""

from __future__ import annotations

import io
import shutil
import subprocess

import pytest

from composer.errors import OutputError
from composer.tree import Blob, Entry, EntryType, FileTree
from composer.writers.cpio import FIRST_INODE, write_cpio
from tests.helpers.clock import another_clock

MTIME = 1725622440


def _tree() -> FileTree:
    tree = FileTree()
    tree.add_dir("bin")
    tree.add_file("bin/busybox", b"ELF busybox", mode=0o755)
    tree.add_symlink("bin/sh", "/bin/busybox")
    tree.add_dir("home/user", mode=0o700, uid=1000, gid=1000)
    tree.add_file("usr/bin/getent", b"#!/bin/sh\n", mode=0o755)
    link = tree.new_link_id()
    blob = tree.store.from_bytes(b"shared data")
    for path in ("usr/bin/a-link", "usr/bin/z-link"):
        tree.put(Entry(path=path, type=EntryType.FILE, mode=0o755, blob=blob, link_id=link))
    tree.put(Entry(path="dev/console", type=EntryType.CHAR, mode=0o600, devmajor=5, devminor=1))
    tree.put(Entry(path="dev/initctl", type=EntryType.FIFO, mode=0o600))
    return tree


def _parse(data: bytes) -> list[dict[str, object]]:
    """A strict newc reader: checks magic, alignment and the trailer."""
    entries = []
    pos = 0
    names = ("ino", "mode", "uid", "gid", "nlink", "mtime", "size", "devmajor", "devminor",
             "rdevmajor", "rdevminor", "namesize", "check")
    while True:
        assert data[pos:pos + 6] == b"070701"
        fields = {n: int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i, n in enumerate(names)}
        name_end = pos + 110 + int(fields["namesize"])
        name = data[pos + 110:name_end - 1].decode()
        assert data[name_end - 1] == 0
        pos = name_end + (-name_end % 4)
        body = data[pos:pos + int(fields["size"])]
        pos += int(fields["size"]) + (-int(fields["size"]) % 4)
        if name == "TRAILER!!!":
            assert pos == len(data)
            return entries
        entries.append({"name": name, "body": body, **fields})


def test_entries_headers_and_hard_links() -> None:
    out = io.BytesIO()
    size = write_cpio(_tree().walk(), out, mtime=MTIME)
    data = out.getvalue()
    assert size == len(data) and len(data) % 4 == 0
    entries = {e["name"]: e for e in _parse(data)}
    assert list(entries) == ["bin", "bin/busybox", "bin/sh", "dev", "dev/console", "dev/initctl",
                             "home", "home/user", "usr", "usr/bin", "usr/bin/a-link",
                             "usr/bin/getent", "usr/bin/z-link"]
    assert [e["ino"] for e in entries.values()][:3] == [FIRST_INODE, FIRST_INODE + 1,
                                                         FIRST_INODE + 2]
    assert {e["mtime"] for e in entries.values()} == {MTIME}
    console = entries["dev/console"]
    assert (console["mode"], console["rdevmajor"], console["rdevminor"]) == (0o20600, 5, 1)
    assert entries["dev/initctl"]["mode"] == 0o10600
    assert entries["bin/sh"]["mode"] == 0o120777 and entries["bin/sh"]["body"] == b"/bin/busybox"
    assert (entries["home/user"]["uid"], entries["home/user"]["mode"]) == (1000, 0o40700)
    first, second = entries["usr/bin/a-link"], entries["usr/bin/z-link"]
    assert first["ino"] == second["ino"] and first["nlink"] == second["nlink"] == 2
    assert (first["body"], second["body"], second["size"]) == (b"shared data", b"", 0)
    # The exact bytes of the first header: what the kernel's gen_init_cpio would write.
    assert data[:110 + 4] == (b"070701" + b"%08X" % FIRST_INODE + b"000041ED" + b"00000000" * 2
                              + b"00000002" + b"%08X" % MTIME + b"00000000" * 5 + b"00000004"
                              + b"00000000" + b"bin\0")


def test_same_tree_same_bytes_whatever_the_insertion_order() -> None:
    one, two = io.BytesIO(), io.BytesIO()
    write_cpio(_tree().walk(), one, mtime=MTIME)
    tree = _tree()
    tree.entries = dict(reversed(list(tree.entries.items())))
    with another_clock():
        write_cpio(tree.walk(), two, mtime=MTIME)
    assert one.getvalue() == two.getvalue()


@pytest.mark.parametrize("mtime", [1 << 32, -1])
def test_timestamps_beyond_32_bits_are_refused(mtime: int) -> None:
    out = io.BytesIO()
    with pytest.raises(OutputError) as info:
        write_cpio(_tree().walk(), out, mtime=mtime)
    assert str(info.value) == (f"cpio: timestamp {mtime} is outside the newc format's 32-bit "
                               "mtime (1970 to 2106)")
    assert out.getvalue() == b""


def test_sizes_and_owners_beyond_32_bits_are_refused() -> None:
    """A 4 GiB file (a blob that claims the size; nothing is read) and a 2^32 uid."""
    huge = Entry(path="big", type=EntryType.FILE, mode=0o644,
                 blob=Blob(data=b"", path=None, size=1 << 32))
    with pytest.raises(OutputError) as info:
        write_cpio([huge], io.BytesIO(), mtime=MTIME)
    assert str(info.value) == ("cpio: 'big': size 4294967296 does not fit the newc format's "
                               "32-bit field")
    owner = Entry(path="home/x", type=EntryType.DIR, mode=0o755, uid=1 << 32)
    with pytest.raises(OutputError, match="^cpio: 'home/x': uid 4294967296 does not fit"):
        write_cpio([owner], io.BytesIO(), mtime=MTIME)


def test_gnu_cpio_lists_and_extracts_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    if shutil.which("cpio") is None:
        pytest.skip("GNU cpio is not installed (apt-get install cpio)")
    out = io.BytesIO()
    write_cpio(_tree().walk(), out, mtime=MTIME)
    listing = subprocess.run(["cpio", "-itv", "--quiet", "--numeric-uid-gid"], input=out.getvalue(),
                             capture_output=True, check=True).stdout.decode()
    lines = {line.split()[-1] if "->" not in line else line.split()[-3]: line
             for line in listing.splitlines()}
    assert lines["dev/console"].startswith("crw-------") and "5,   1" in lines["dev/console"]
    assert lines["bin/sh"].startswith("lrwxrwxrwx")
    assert lines["home/user"].split()[2:4] == ["1000", "1000"]
    subprocess.run(["cpio", "-id", "--quiet", "--no-absolute-filenames", "--nonmatching",
                    "dev/*"], input=out.getvalue(), cwd=tmp_path, check=True)
    assert (tmp_path / "usr/bin/z-link").read_bytes() == b"shared data"
    assert (tmp_path / "usr/bin/a-link").stat().st_ino == (tmp_path / "usr/bin/z-link").stat().st_ino
    assert (tmp_path / "bin/busybox").read_bytes() == b"ELF busybox"
