"""squashfs writer: unsquashfs (and, where the test may loop-mount, the kernel) reads back
exactly the tree: paths, owners, modes, sizes, targets, devices, content, hard links, xattrs;
the bytes depend on nothing but the tree."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from composer.archive import load_tar
from composer.errors import OutputError
from composer.tree import Blob, Entry, EntryType, FileTree
from composer.writers.squashfs import write_squashfs
from tests.helpers.clock import another_clock
from tests.writers.oci_trees import MINIROOTFS, golden_tree, mirrored_trees
from tests.writers.squashfs_trees import full_tree, with_xattrs

MTIME = 1725622440
GOLDEN = "13229c4331fd404ef638347b6d5353325dd64daeae8e3b2a332231e59a535c9c"

needs_unsquashfs = pytest.mark.skipif(
    shutil.which("unsquashfs") is None,
    reason="unsquashfs is not installed (apt-get install squashfs-tools)")


def _image(tree: FileTree, path: Path, **options: object) -> Path:
    with path.open("wb") as out:
        size = write_squashfs(tree, out, mtime=MTIME, **options)  # type: ignore[arg-type]
    assert size == path.stat().st_size and size % 4096 == 0
    return path


_LINE = re.compile(r"^(\S{10}) (\d+)/(\d+) +(\d+|\d+, *\d+) (\S+ \S+) squashfs-root(.*)$")


def _listing(image: Path) -> dict[str, tuple[str, int, int, str, str, str]]:
    """``unsquashfs -lln``: path → (mode string, uid, gid, size or device, time, target)."""
    done = subprocess.run(["unsquashfs", "-lln", str(image)], capture_output=True, text=True,
                          env={**os.environ, "TZ": "UTC"}, check=True)
    result = {}
    for line in done.stdout.splitlines():
        match = _LINE.match(line)
        assert match, line
        mode, uid, gid, size, when, rest = match.groups()
        path, _, target = rest.partition(" -> ") if mode[0] == "l" else (rest, "", "")
        result[path.lstrip("/")] = (mode, int(uid), int(gid), size.replace(" ", ""), when,
                                    target)
    return result


def _expected(tree: FileTree) -> dict[str, tuple[str, int, int, str, str, str]]:
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(MTIME))
    result = {}
    for e in tree.walk():
        if e.type in (EntryType.CHAR, EntryType.BLOCK):
            # unsquashfs 4.5.1 lists the stored number's top bits as the major: right for minors
            # below 256; the kernel reads the rest (test_the_kernel_mounts_it).
            rdev = (e.devminor & 0xFF) | (e.devmajor << 8) | ((e.devminor & ~0xFF) << 12)
            size = f"{rdev >> 8},{rdev & 0xFF}"
        elif e.type == EntryType.SYMLINK:
            size = str(len(e.target.encode()))
        elif e.type == EntryType.DIR:
            size = "dir"
        else:
            size = str(e.size)
        result[e.path] = (stat.filemode(e.st_mode), e.uid, e.gid, size, when, e.target)
    return result


def _same_listing(image: Path, tree: FileTree) -> None:
    got = _listing(image)
    got = {p: (v[:3] + ("dir",) + v[4:]) if v[0][0] == "d" else v for p, v in got.items()}
    assert got == _expected(tree)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def _tree_hashes(tree: FileTree) -> dict[str, str]:
    return {e.path: hashlib.sha256(tree.read_file(e.path)).hexdigest()
            for e in tree.walk() if e.type == EntryType.FILE}


def _as_user(command: list[str]) -> list[str]:
    """Run as an unprivileged user: the extraction must not need root."""
    if os.geteuid() != 0:
        return command
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]


@contextlib.contextmanager
def _mounted(image: Path, where: Path) -> Iterator[Path]:
    """The image loop-mounted read-only by the running kernel, or a skip."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("loop-mounting the image needs root")
    where.mkdir()
    done = subprocess.run(["mount", "-t", "squashfs", "-o", "loop,ro", str(image), str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot loop-mount here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@needs_unsquashfs
def test_listing_matches_tree(tmp_path: Path) -> None:
    tree = full_tree()
    _same_listing(_image(tree, tmp_path / "fs.img"), tree)


@needs_unsquashfs
def test_extracts_identical_content_as_non_root(tmp_path: Path) -> None:
    tree = full_tree()
    tree.remove("dev")  # device nodes need root to create; the listing test covers them
    image = _image(tree, tmp_path / "fs.img")
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o777)
    # The unprivileged user may not pass through pytest's private folders: it reads the image
    # through an inherited descriptor and extracts relative to its working directory.
    with image.open("rb") as fh:
        done = subprocess.run(_as_user(["unsquashfs", "-no-xattrs", "-d", "x",
                                        f"/dev/fd/{fh.fileno()}"]), capture_output=True,
                              text=True, cwd=home, pass_fds=(fh.fileno(),))
    assert done.returncode == 0, done.stderr
    root = home / "x"
    assert _hashes(root) == _tree_hashes(tree)
    assert os.readlink(root / "bin/sh") == "/bin/busybox"
    assert os.readlink(root / "srv/long") == "x/" * 1000 + "end"
    one, two = (root / "usr/lib/libz.so.1").stat(), (root / "usr/lib/libz.so.1.3.1").stat()
    assert one.st_ino == two.st_ino and one.st_nlink == 2
    assert stat.S_ISFIFO((root / "run/initctl").lstat().st_mode)


@needs_unsquashfs
@pytest.mark.parametrize(("compression", "block_size"), [("gzip", 131072), ("none", 65536)])
def test_superblock_names_compression_and_block_size(tmp_path: Path, compression: str,
                                                     block_size: int) -> None:
    image = _image(full_tree(), tmp_path / "fs.img", compression=compression,
                   block_size=block_size)
    done = subprocess.run(["unsquashfs", "-s", str(image)], capture_output=True, text=True,
                          check=True)
    lines = set(done.stdout.splitlines())
    assert {"Compression gzip", f"Block size {block_size}", "Number of fragments 1",
            "Filesystem is exportable via NFS", "Duplicates are removed"} <= lines
    state = "uncompressed" if compression == "none" else "compressed"
    assert {f"Data is {state}", f"Inodes are {state}", f"Fragments are {state}"} <= lines


@needs_unsquashfs
def test_multi_block_files_sparse_blocks_and_small_block_size(tmp_path: Path) -> None:
    tree = FileTree()
    random = hashlib.shake_256(b"incompressible").digest(3 * 4096)
    tree.add_file("holes", b"a" * 4096 + bytes(8192) + random + b"end")
    tree.add_file("exact", b"b" * 4096 * 3)
    tree.add_file("random", random)
    tree.add_file("copy-of-random", random, mode=0o600)
    image = _image(tree, tmp_path / "fs.img", block_size=4096)
    _same_listing(image, tree)
    done = subprocess.run(["unsquashfs", "-d", str(tmp_path / "x"), str(image)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _hashes(tmp_path / "x") == _tree_hashes(tree)
    # Holes are not stored, "copy-of-random" is "random" stored once; what remains is six raw
    # blocks of random bytes (three of them inside "holes") and little else.
    assert image.stat().st_size == 6 * 4096 + 4096


@needs_unsquashfs
def test_large_directories_keep_every_name(tmp_path: Path) -> None:
    """Over 256 entries (several headers) and over 8 KiB of listing (an index)."""
    tree = FileTree()
    names = [f"{i:05d}-" + "n" * (i % 200) for i in range(1200)]
    for name in names:
        tree.add_file(f"many/{name}", name.encode())
    for i in range(300):
        tree.add_dir(f"dirs/{i:03d}")
    image = _image(tree, tmp_path / "fs.img")
    _same_listing(image, tree)
    with _mounted(image, tmp_path / "mnt") as mnt:
        # Each lookup goes through the kernel's directory index.
        for name in names:
            assert (mnt / "many" / name).read_bytes() == name.encode()
        assert sorted(os.listdir(mnt / "many")) == sorted(names)
        assert os.stat(mnt / "dirs").st_nlink == 302


@needs_unsquashfs
def test_the_kernel_mounts_it(tmp_path: Path) -> None:
    tree = with_xattrs(full_tree())
    image = _image(tree, tmp_path / "fs.img")
    with _mounted(image, tmp_path / "mnt") as mnt:
        for e in tree.walk():
            st_ = os.lstat(mnt / e.path) if e.path else os.lstat(mnt)
            assert (st_.st_mode, st_.st_uid, st_.st_gid, st_.st_mtime) == (
                e.st_mode, e.uid, e.gid, MTIME), e.path
            if e.type == EntryType.FILE:
                assert (mnt / e.path).read_bytes() == tree.read_file(e.path)
                assert st_.st_nlink == (2 if e.link_id else 1)
            if e.type in (EntryType.CHAR, EntryType.BLOCK):
                assert (os.major(st_.st_rdev), os.minor(st_.st_rdev)) == (e.devmajor, e.devminor)
            if e.type == EntryType.SYMLINK:
                assert os.readlink(mnt / e.path) == e.target
            for name, value in e.xattrs:
                assert os.getxattr(mnt / e.path, name, follow_symlinks=False) == value


@needs_unsquashfs
@pytest.mark.slow
def test_real_minirootfs_round_trips_and_is_as_small_as_mksquashfs(tmp_path: Path) -> None:
    if not MINIROOTFS.is_file():
        pytest.skip(f"real Alpine fixtures not found at {MINIROOTFS}")
    tree = FileTree()
    with gzip.open(MINIROOTFS) as raw:
        load_tar(raw, tree, source="minirootfs")  # type: ignore[arg-type]
    assert len(tree) == 518
    image = _image(tree, tmp_path / "fs.img")
    _same_listing(image, tree)
    done = subprocess.run(["unsquashfs", "-no-xattrs", "-d", str(tmp_path / "x"), str(image)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _hashes(tmp_path / "x") == _tree_hashes(tree)
    assert _listing(image)[""][:3] == ("drwxr-xr-x", 0, 0)
    if shutil.which("mksquashfs") is not None:
        with gzip.open(MINIROOTFS) as raw:
            subprocess.run(["mksquashfs", "-", str(tmp_path / "ref.img"), "-tar", "-comp",
                            "gzip", "-b", "131072", "-noappend", "-quiet", "-no-progress"],
                           input=raw.read(), capture_output=True, check=True)
        theirs = (tmp_path / "ref.img").stat().st_size
        assert image.stat().st_size <= theirs


def test_golden_digest() -> None:
    out = io.BytesIO()
    write_squashfs(golden_tree(), out, mtime=MTIME)
    assert hashlib.sha256(out.getvalue()).hexdigest() == GOLDEN


def test_bytes_depend_only_on_the_tree(tmp_path: Path) -> None:
    first = io.BytesIO()
    write_squashfs(full_tree(), first, mtime=MTIME)
    old = os.umask(0o077)
    try:
        with another_clock():
            second = io.BytesIO(b"prefix")
            second.seek(0, io.SEEK_END)
            size = write_squashfs(full_tree(), second, mtime=MTIME)
    finally:
        os.umask(old)
    assert second.getvalue()[6:] == first.getvalue() and size == len(first.getvalue())
    assert second.tell() == 6 + size


def test_insertion_order_does_not_matter() -> None:
    forward, backward = mirrored_trees(30)
    one, two = io.BytesIO(), io.BytesIO()
    write_squashfs(forward, one, mtime=MTIME)
    write_squashfs(backward, two, mtime=MTIME)
    assert one.getvalue() == two.getvalue()


def _bad(change: str) -> tuple[FileTree, dict[str, object]]:
    tree = FileTree()
    options: dict[str, object] = {}
    if change == "block":
        options["block_size"] = 3000
    elif change == "time":
        options["mtime"] = 2**32
    elif change == "xattr":
        tree.put(Entry(path="f", type=EntryType.FILE, mode=0o644,
                       xattrs=(("system.posix_acl_access", b"\x02"),)))
    elif change == "symlink":
        tree.add_symlink("l", "a" * 4097)
    elif change == "device":
        tree.put(Entry(path="d", type=EntryType.CHAR, mode=0o600, devmajor=4096))
    elif change == "name":
        tree.add_file("n" * 257, b"")
    return tree, options


@pytest.mark.parametrize(("change", "message"), [
    ("block", "squashfs: block size 3000 is not a power of two from 4096 to 1048576"),
    ("time", "squashfs: time 4294967296 does not fit 32 bits"),
    ("xattr", "squashfs: f: xattr 'system.posix_acl_access' cannot be stored (squashfs keeps "
              "user.*, trusted.* and security.* attributes only)"),
    ("symlink", "squashfs: l: symlink target of 4097 bytes (1 to 4096)"),
    ("device", "squashfs: d: device 4096:0 does not fit (major up to 4095, minor up to "
               "1048575)"),
    ("name", f"squashfs: {'n' * 257}: name longer than 256 bytes"),
])
def test_refuses_what_squashfs_cannot_hold(change: str, message: str) -> None:
    tree, options = _bad(change)
    out = io.BytesIO()
    with pytest.raises(OutputError) as caught:
        write_squashfs(tree, out, **{"mtime": MTIME, **options})  # type: ignore[arg-type]
    assert str(caught.value) == message
    assert out.getvalue() == b""


_names = st.text(alphabet="abcXY.-_\u00e9", min_size=1, max_size=12).filter(
    lambda s: s not in (".", ".."))
_kinds = st.sampled_from(["file", "dir", "symlink", "fifo", "char"])


@needs_unsquashfs
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.lists(_names, min_size=1, max_size=3).map("/".join),
                       st.tuples(_kinds, st.binary(max_size=5000), st.integers(0, 0o7777),
                                 st.integers(0, 70000)), max_size=14),
       st.sampled_from([4096, 8192, 131072]))
def test_random_trees_round_trip(tmp_path: Path,
                                 entries: dict[str, tuple[str, bytes, int, int]],
                                 block_size: int) -> None:
    tree = FileTree()
    for path, (kind, data, mode, owner) in entries.items():
        with contextlib.suppress(Exception):  # a path below a file or a symlink: skip it
            if kind == "file":
                tree.add_file(path, data, mode=mode, uid=owner, gid=owner // 2)
            elif kind == "dir":
                tree.add_dir(path, mode=mode, uid=owner)
            elif kind == "symlink":
                tree.add_symlink(path, data.hex() or "t", uid=owner)
            else:
                tree.put(Entry(path=path, mode=mode, gid=owner, devmajor=owner % 4096,
                               devminor=owner % 256,
                               type=EntryType.FIFO if kind == "fifo" else EntryType.CHAR))
    image = tmp_path / f"fs-{block_size}.img"
    _image(tree, image, block_size=block_size)
    _same_listing(image, tree)
    out = tmp_path / "x"
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run(["unsquashfs", "-no-xattrs", "-d", str(out), str(image), *[
        e.path for e in tree.walk() if e.type == EntryType.FILE]], capture_output=True, check=True)
    assert _hashes(out) == _tree_hashes(tree)


@needs_unsquashfs
@pytest.mark.slow
def test_a_file_over_4_gib_gets_an_extended_inode(tmp_path: Path) -> None:
    """Sizes past 32 bits: holes for the zeros, the tail in a fragment, a 64-bit size."""
    sparse = tmp_path / "sparse"
    size = (4 << 30) + 5
    with sparse.open("wb") as fh:
        fh.truncate(size - 5)
        fh.seek(size - 5)
        fh.write(b"tail!")
    tree = FileTree()
    tree.put(Entry(path="big", type=EntryType.FILE, mode=0o644,
                   blob=Blob(data=None, path=str(sparse), size=size)))
    image = _image(tree, tmp_path / "fs.img", block_size=1 << 20)
    assert image.stat().st_size == 4096  # 4096 holes: a block list of zeros, no data
    assert _listing(image)["big"][3] == str(size)
    with _mounted(image, tmp_path / "mnt") as mnt, (mnt / "big").open("rb") as fh:
        assert os.fstat(fh.fileno()).st_size == size
        fh.seek(size - 6)
        assert fh.read() == b"\0tail!"
