"""One-pass data loading, and the data hash check it takes over from verify_apk."""

from __future__ import annotations

import contextlib
import hashlib
import random
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from composer.apk.datatar import load_package_data
from composer.apk.install import PackageToInstall, install_packages
from composer.apk.package import VerifiedPackage, verify_apk
from composer.errors import ArchiveError, VerificationError
from composer.tree import BlobStore, EntryType, FileTree
from tests.helpers.apkrepo import (
    FileSpec,
    HardlinkSpec,
    PackageSpec,
    SymlinkSpec,
    build_package,
    signing_key,
)

KEY = signing_key()
_rng = random.Random(7)
BIG = _rng.randbytes(3 * 1024 * 1024 + 123)  # crosses several 1 MiB inflate steps
SPEC = PackageSpec(
    "blobs", "1.0-r0",
    files={"usr/share/blobs/big": BIG,
           "usr/share/blobs/small": FileSpec(b"small\n", mode=0o600, uid=5),
           "usr/share/blobs/empty": b"",
           "usr/share/blobs/mid": _rng.randbytes(300 * 1024),
           "usr/share/blobs/link": SymlinkSpec("big"),
           "usr/share/blobs/hard": HardlinkSpec("usr/share/blobs/big"),
           **{f"usr/share/blobs/n{i:02d}": _rng.randbytes(i * 997) for i in range(40)}})


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "pkg.apk"
    path.write_bytes(data)
    return path


def _contents(tree: FileTree) -> dict[str, tuple[str, int, bytes | str]]:
    return {p: (e.type.value, e.mode, e.blob.read() if e.blob else e.target)
            for p, e in tree.entries.items()}


def _tarfile_view(pkg: VerifiedPackage) -> dict[str, tuple[str, int, bytes | str]]:
    """The data tar as Python's tarfile reads it: an independent reference."""
    kinds = {tarfile.REGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink"}
    view: dict[str, tuple[str, int, bytes | str]] = {}
    with pkg.open_data() as raw, tarfile.open(fileobj=raw, mode="r|") as archive:
        for member in archive:
            if member.name.startswith("."):
                continue
            if member.islnk():
                view[member.name] = view[member.linkname]
                continue
            body = archive.extractfile(member) if member.isfile() else None
            content = body.read() if body is not None else member.linkname
            view[member.name.rstrip("/")] = (kinds[member.type], member.mode, content)
    return view


@pytest.mark.parametrize("spill", [False, True])
def test_load_matches_tarfile(tmp_path: Path, spill: bool) -> None:
    path = _write(tmp_path, build_package(SPEC, KEY).data)
    pkg = verify_apk(path, KEY.trusted(), source="repo")
    store = BlobStore(memory_budget=0) if spill else BlobStore()
    try:
        tree, contents = load_package_data(pkg, store)
        expected = _tarfile_view(pkg)
        loaded = {p: v for p, v in _contents(tree).items() if p in expected}
        assert loaded == expected
        assert set(contents.paths) >= set(expected)
        for p, (kind, _, body) in expected.items():
            if kind == "file" and p != "usr/share/blobs/hard":
                assert contents.sha1[p] == hashlib.sha1(body).digest()  # type: ignore[arg-type]
            elif kind == "symlink":
                assert contents.sha1[p] == hashlib.sha1(body.encode()).digest()  # type: ignore[union-attr]
        assert "usr/share/blobs/hard" not in contents.sha1
        assert tree.entries["usr/share/blobs/hard"].blob is \
            tree.entries["usr/share/blobs/big"].blob
    finally:
        store.close()


def test_cached_copy_is_verified_without_hashing_its_data(tmp_path: Path) -> None:
    built = build_package(SPEC, KEY)
    path = _write(tmp_path, built.data)
    full = verify_apk(path, KEY.trusted(), source="repo")
    quick = verify_apk(path, KEY.trusted(), source="repo", hash_data=False)
    assert (full.data_checked, quick.data_checked) == (True, False)
    assert quick.data_sha256 == full.data_sha256 == full.info.datahash
    assert (quick.data_offset, quick.data_size, quick.file_size) == (
        full.data_offset, full.data_size, full.file_size)
    with _store() as store:
        tree, _ = load_package_data(quick, store)
        assert tree.read_file("usr/share/blobs/big") == BIG


@contextlib.contextmanager
def _store() -> Iterator[BlobStore]:
    store = BlobStore()
    try:
        yield store
    finally:
        store.close()


def _damage(tmp_path: Path, how: str) -> tuple[VerifiedPackage, str]:
    """A package verified without its data hash, then damaged on disk; and its real hash."""
    built = build_package(SPEC, KEY)
    path = _write(tmp_path, built.data)
    pkg = verify_apk(path, KEY.trusted(), source="repo", hash_data=False)
    data = bytearray(built.data)
    start = pkg.data_offset
    if how == "mtime":
        data[start + 4] ^= 1  # gzip MTIME: inflates fine, hashes differently
    elif how == "deflate":
        for i in range(start + 5000, start + 5064):
            data[i] ^= 0x5A
    elif how == "crc":
        data[-8] ^= 0xFF
    else:
        del data[-100:]
    path.write_bytes(bytes(data))
    return pkg, hashlib.sha256(bytes(data[start:])).hexdigest()


@pytest.mark.parametrize("how", ["mtime", "deflate", "crc", "truncated"])
def test_damaged_data_is_a_data_hash_mismatch(tmp_path: Path, how: str) -> None:
    pkg, actual = _damage(tmp_path, how)
    with _store() as store, pytest.raises(VerificationError) as err:
        load_package_data(pkg, store)
    assert str(err.value) == (
        f"package blobs-1.0-r0 (repo): data hash mismatch (.PKGINFO datahash "
        f"{pkg.info.datahash}, data member sha256 {actual})")


def test_fully_verified_copy_changed_later_is_reported_as_changed(tmp_path: Path) -> None:
    built = build_package(SPEC, KEY)
    path = _write(tmp_path, built.data)
    pkg = verify_apk(path, KEY.trusted(), source="repo")
    data = bytearray(built.data)
    data[pkg.data_offset + 4] ^= 1
    path.write_bytes(bytes(data))
    with _store() as store, pytest.raises(VerificationError) as err:
        load_package_data(pkg, store)
    assert str(err.value) == "package blobs-1.0-r0 (repo): data changed after it was verified"


def test_hostile_signed_data_keeps_its_own_error(tmp_path: Path) -> None:
    spec = PackageSpec("evil", "1-r0", files={"../evil": b"x"})
    pkg = verify_apk(_write(tmp_path, build_package(spec, KEY).data), KEY.trusted(),
                     source="repo", hash_data=False)
    with _store() as store, pytest.raises(ArchiveError) as err:
        load_package_data(pkg, store)
    assert str(err.value) == "package evil-1-r0 (repo): data: member '../evil' contains '..'"


def test_legacy_package_is_always_hashed_in_full(tmp_path: Path) -> None:
    spec = PackageSpec("old", "1-r0", files={"usr/bin/old": b"old"})
    pkg = verify_apk(_write(tmp_path, build_package(spec, KEY, legacy=True).data),
                     KEY.trusted(), source="repo", hash_data=False)
    assert pkg.data_checked and pkg.info.datahash is None


def test_install_fetches_a_damaged_copy_again(tmp_path: Path) -> None:
    pkg, _ = _damage(tmp_path, "mtime")
    good_path = tmp_path / "good.apk"
    good_path.write_bytes(build_package(SPEC, KEY).data)
    calls: list[str] = []

    def refetch() -> VerifiedPackage:
        calls.append("refetch")
        return verify_apk(good_path, KEY.trusted(), source="repo")

    with FileTree() as tree:
        install_packages(tree, [PackageToInstall(pkg, refetch=refetch)], world=["blobs"],
                         arch="x86_64", keys={}, run_effects=False)
        assert calls == ["refetch"]
        assert tree.read_file("usr/share/blobs/big") == BIG
        assert tree.entries["usr/share/blobs/link"].type == EntryType.SYMLINK


def test_install_without_refetch_fails_and_leaves_the_tree_alone(tmp_path: Path) -> None:
    pkg, _ = _damage(tmp_path, "deflate")
    with FileTree() as tree, pytest.raises(VerificationError, match="data hash mismatch"):
        install_packages(tree, [PackageToInstall(pkg)], world=["blobs"], arch="x86_64",
                         keys={}, run_effects=False)
    assert "usr/share/blobs/big" not in tree


def test_refetch_of_another_package_is_refused(tmp_path: Path) -> None:
    pkg, _ = _damage(tmp_path, "mtime")
    other = tmp_path / "other.apk"
    other.write_bytes(build_package(PackageSpec("blobs", "1.0-r0", files={"x": b"x"}), KEY).data)
    with FileTree() as tree, pytest.raises(VerificationError) as err:
        install_packages(
            tree, [PackageToInstall(pkg, refetch=lambda: verify_apk(other, KEY.trusted(),
                                                                      source="repo"))],
            world=["blobs"], arch="x86_64", keys={}, run_effects=False)
    assert str(err.value) == ("package blobs-1.0-r0 (repo): fetched again, but the package "
                              "changed")
