"""Differential test against the real apk-tools 2.14 from the Alpine 3.19.1 ISO.

The same packages are installed by ``apk add --no-scripts`` and by composer;
the two roots must hold the same files and the same database. Known,
legitimate differences (normalised below):

* apk --initdb mknods ``dev/{null,zero,random,urandom,console}``; composer makes
  no device nodes, like Alpine's official minirootfs.
* apk 2.14.0 stamps ``scripts.tar`` members with the current time; composer uses
  the package build time (as apk 2.14.4 in Alpine 3.20 does), so mtimes differ.
* busybox applet links: apk with --no-scripts makes none; composer's effect
  pass does (compared separately with ``run_effects=False``).

Then the real apk must accept composer's output: ``info``, ``audit``,
``verify`` and ``add --simulate`` on a root extracted from composer's tar.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from composer.apk import db
from composer.apk.index import parse_apkindex
from composer.apk.install import PackageToInstall, install_packages
from composer.apk.keys import TrustedKeys
from composer.apk.package import verify_apk
from composer.tree import FileTree
from composer.writers.tar import write_tar
from tests.helpers.tools import extract_trusted

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "alpine-real"
REPO = SHARED / "iso-3.19.1-x86_64" / "apks"
KEYS = SHARED / "apk-keys"
WORLD = ["alpine-baselayout", "alpine-keys", "apk-tools", "busybox", "libc-utils"]
APK_RUNTIME = ("musl-1", "apk-tools-2", "libcrypto3-", "libssl3-", "zlib-")
EPOCH = 1700000000

pytestmark = pytest.mark.skipif(
    platform.machine() != "x86_64" or not REPO.exists() or os.geteuid() != 0,
    reason="needs x86_64, root (apk writes owners) and ../shared/fixtures/alpine-real")


@pytest.fixture(scope="module")
def apk_tool(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """argv prefix running the ISO's apk-tools through its own musl loader."""
    base = tmp_path_factory.mktemp("apk-tools")
    for prefix in APK_RUNTIME:
        (apk,) = sorted((REPO / "x86_64").glob(prefix + "*.apk"))
        with tarfile.open(apk, "r:gz") as archive:
            members = [m for m in archive if not m.name.startswith(".")]
            extract_trusted(archive, base, members=members, filter="tar")
    lib = f"{base}/lib:{base}/usr/lib"
    return [f"{base}/lib/ld-musl-x86_64.so.1", "--library-path", lib, f"{base}/sbin/apk"]


def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def apk_root(apk_tool: list[str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("apk-root")
    out = _run([*apk_tool, "--root", str(root), "--initdb", "--arch", "x86_64", "--keys-dir",
                str(KEYS), "--repository", str(REPO), "--repositories-file", "/dev/null",
                "--no-scripts", "--no-cache", "add", *WORLD])
    order = re.findall(r"Installing (\S+) \(", out)
    assert len(order) == 15
    return root, order


def _composer_tree(order: list[str], *, run_effects: bool) -> FileTree:
    keys = TrustedKeys.from_files({p.name: p.read_bytes() for p in KEYS.iterdir()})
    with tarfile.open(REPO / "x86_64" / "APKINDEX.tar.gz") as archive:
        member = archive.extractfile("APKINDEX")
        assert member is not None
        index = {p.name: p for p in parse_apkindex(member.read(), source="iso").packages}
    items = []
    for name in order:
        record = index[name]
        path = REPO / "x86_64" / record.filename
        items.append(PackageToInstall(verify_apk(path, keys, source=str(path),
                                                 expected_checksum=record.checksum), record))
    tree = FileTree()
    install_packages(tree, items, world=WORLD, arch="x86_64", keys={}, epoch=EPOCH,
                     run_effects=run_effects)
    return tree


def _host_tree(root: Path) -> dict[str, tuple[object, ...]]:
    found: dict[str, tuple[object, ...]] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            full = os.path.join(directory, name)
            st = os.lstat(full)
            kind = stat.S_IFMT(st.st_mode)
            target = os.readlink(full) if stat.S_ISLNK(st.st_mode) else ""
            digest = (hashlib.sha256(Path(full).read_bytes()).hexdigest()
                      if stat.S_ISREG(st.st_mode) else None)
            mode = 0o777 if stat.S_ISLNK(st.st_mode) else stat.S_IMODE(st.st_mode)
            found[os.path.relpath(full, root)] = (kind, mode, st.st_uid, st.st_gid, target, digest)
    return found


def _composer_files(tree: FileTree) -> dict[str, tuple[object, ...]]:
    return {e.path: (stat.S_IFMT(e.st_mode), e.mode, e.uid, e.gid, e.target,
                     e.blob.sha256 if e.blob else None) for e in tree.walk() if e.path}


def test_same_files_and_database_as_apk(apk_root: tuple[Path, list[str]]) -> None:
    root, order = apk_root
    tree = _composer_tree(order, run_effects=False)
    theirs = _host_tree(root)
    device_nodes = {p for p, v in theirs.items() if v[0] == stat.S_IFCHR}
    assert device_nodes == {"dev/null", "dev/zero", "dev/random", "dev/urandom", "dev/console"}
    ours = _composer_files(tree)
    scripts = db.SCRIPTS_PATH
    assert {p: v for p, v in ours.items() if p != scripts} == {
        p: v for p, v in theirs.items() if p not in device_nodes and p != scripts}

    for path in (db.INSTALLED_PATH, db.TRIGGERS_PATH, db.WORLD_PATH, db.ARCH_PATH):
        assert tree.read_file(path) == (root / path).read_bytes(), path
    their_scripts = (root / scripts).read_bytes()
    parsed = db.parse_scripts_tar(their_scripts)
    assert db.format_scripts_tar(parsed) == their_scripts
    ours_scripts = db.parse_scripts_tar(tree.read_file(scripts))
    assert [(s.member_name, s.data) for s in ours_scripts] == [
        (s.member_name, s.data) for s in parsed]
    restamped = [s.__class__(**{**s.__dict__, "mtime": o.mtime})
                 for s, o in zip(parsed, ours_scripts, strict=True)]
    assert db.format_scripts_tar(restamped) == tree.read_file(scripts)


def test_apk_accepts_composer_output(apk_tool: list[str], apk_root: tuple[Path, list[str]],
                                     tmp_path: Path) -> None:
    their_root, order = apk_root
    tree = _composer_tree(order, run_effects=True)
    assert tree.entries["bin/ls"].target == "/bin/busybox"
    with (tmp_path / "rootfs.tar").open("wb") as fh:
        write_tar(tree, fh, mtime=EPOCH)
    root = tmp_path / "root"
    root.mkdir()
    _run(["tar", "-xpf", str(tmp_path / "rootfs.tar"), "-C", str(root)])
    apk = [*apk_tool, "--keys-dir", str(KEYS), "--repositories-file", "/dev/null",
           "--repository", str(REPO), "--no-cache", "--root"]

    info = _run([*apk, str(root), "info", "-v"]).split()
    expected = [f"{p.name}-{p.version}"
                for p in db.parse_installed(tree.read_file(db.INSTALLED_PATH))]
    assert sorted(info) == expected and len(expected) == len(order) == 15
    assert _run([*apk, str(root), "audit"]) == _run([*apk, str(their_root), "audit"])
    _run([*apk, str(root), "verify"])
    simulated = _run([*apk, str(root), "add", "--simulate", "alpine-base"])
    assert "Installing alpine-base (3.19.1-r0)" in simulated
    assert "OK:" in _run([*apk, str(root), "add", "--simulate", "busybox"])


def test_dependency_cycle_installs_in_apks_order(apk_tool: list[str], tmp_path: Path) -> None:
    """A cycle (a → b → c → a) is legal in apk: both tools install all three, in one order."""
    import json

    from tests.conftest import run_cli
    from tests.helpers.apkrepo import PackageSpec, build_repository, signing_key

    key = signing_key()
    specs = [PackageSpec(name, "1.0-r0", depends=(after,), files={f"usr/share/{name}": b"x"})
             for name, after in (("a", "b"), ("b", "c"), ("c", "a"))]
    repo = build_repository(tmp_path / "repo", specs, key)
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / key.name).write_bytes(key.public_pem)
    out = _run([*apk_tool, "--root", str(tmp_path / "apk-root"), "--initdb", "--arch", "x86_64",
                "--keys-dir", str(keys), "--repository", str(repo), "--repositories-file",
                "/dev/null", "--no-scripts", "--no-cache", "add", "a"])
    assert re.findall(r"Installing (\S+) \(", out) == ["c", "b", "a"]

    profile = tmp_path / "cycle.json"
    profile.write_text(json.dumps({
        "name": "cycle", "base": "packages", "branch": "edge", "packages": ["a"],
        "repositories": [repo.resolve().as_uri()], "keys": [str(keys / key.name)],
        "sbom": False, "outputs": [{"format": "tar", "compression": "none"}]}))
    result = run_cli("build", profile, "--output-dir", tmp_path / "out", "--cache-dir",
                     tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "cycle" / "manifest.json").read_text())
    assert sorted(manifest["packages"]["x86_64"]) == ["a-1.0-r0", "b-1.0-r0", "c-1.0-r0"]
    with tarfile.open(tmp_path / "out" / "cycle" / "cycle-edge-x86_64.tar") as archive:
        installed = archive.extractfile("./lib/apk/db/installed")
        assert installed is not None
        ours = re.findall(r"^P:(\S+)$", installed.read().decode(), flags=re.M)
    theirs = (tmp_path / "apk-root" / "lib" / "apk" / "db" / "installed").read_text()
    assert ours == re.findall(r"^P:(\S+)$", theirs, flags=re.M) and len(ours) == 3


def test_owners_modes_and_xattrs_recorded_as_apk_records_them(apk_tool: list[str],
                                                              tmp_path: Path) -> None:
    """``a:``/``M:`` lines (owner, mode, xattr digest) byte for byte as real apk writes them."""
    from tests.helpers.apkrepo import (
        DirSpec,
        FileSpec,
        PackageSpec,
        SymlinkSpec,
        build_repository,
        signing_key,
    )

    key = signing_key()
    xattrs = (("user.foo", b"bar"), ("user.a", b"1"))
    spec = PackageSpec("meta", "1.0-r0", files={
        "usr/bin/ping": FileSpec(b"\x7fELF ping", mode=0o4711, gid=42, xattrs=xattrs),
        "var/lib/meta": DirSpec(mode=0o750, gid=42),
        "etc/meta.conf": FileSpec(b"x=1\n", mode=0o600, uid=100),
        "usr/bin/pong": SymlinkSpec("ping")})
    repo = build_repository(tmp_path / "repo", [spec], key)
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / key.name).write_bytes(key.public_pem)
    root = tmp_path / "apk-root"
    _run([*apk_tool, "--root", str(root), "--initdb", "--arch", "x86_64", "--keys-dir",
          str(keys), "--repository", str(repo), "--repositories-file", "/dev/null",
          "--no-scripts", "--no-cache", "add", "meta"])
    try:
        on_disk = {name: os.getxattr(root / "usr/bin/ping", name)
                   for name in os.listxattr(root / "usr/bin/ping")}
    except OSError as exc:
        pytest.skip(f"this filesystem keeps no user xattrs ({exc})")
    assert on_disk == dict(xattrs)

    (apk_file,) = (repo / "x86_64").glob("meta-*.apk")
    package = verify_apk(apk_file, TrustedKeys.from_files({key.name: key.public_pem}),
                         source="repo")
    with FileTree() as tree:
        install_packages(tree, [package], world=["meta"], arch="x86_64", keys={}, epoch=EPOCH,
                         run_effects=False)
        ours = tree.read_file(db.INSTALLED_PATH).decode()
        assert tree.entries["usr/bin/ping"].xattrs == tuple(sorted(xattrs))
    theirs = (root / db.INSTALLED_PATH).read_text()
    assert "a:0:42:4711:Q1" in theirs and "M:0:42:750" in theirs
    assert ours == theirs
