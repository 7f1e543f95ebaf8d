"""Merging signed synthetic packages into a FileTree, with apk's database and ownership rules."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from composer.apk import db
from composer.apk.index import PackageInfo
from composer.apk.install import PackageToFetch, PackageToInstall, install_packages
from composer.apk.package import VerifiedPackage, verify_apk
from composer.archive import load_tar
from composer.errors import InstallError
from composer.tree import EntryType, FileTree
from tests.helpers.apkrepo import (
    DirSpec,
    FileSpec,
    HardlinkSpec,
    PackageSpec,
    SymlinkSpec,
    build_apk,
    signing_key,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "alpine-real"
MINIROOTFS = SHARED / "minirootfs" / "alpine-minirootfs-3.20.3-x86_64.tar.gz"
EPOCH = 1700000000
KEY = signing_key()


def _verified(spec: PackageSpec) -> VerifiedPackage:
    return verify_apk(build_apk(spec, KEY), KEY.trusted(), source=spec.file_name)


def _install(tree: FileTree, *specs: PackageSpec, world: list[str] | None = None,
             **options: object) -> object:
    return install_packages(tree, [_verified(s) for s in specs],
                            world=world if world is not None else [s.name for s in specs],
                            arch="x86_64", keys={KEY.name: KEY.public_pem}, epoch=EPOCH,
                            **options)  # type: ignore[arg-type]


def _db(tree: FileTree) -> dict[str, db.InstalledPackage]:
    return {p.name: p for p in db.parse_installed(tree.read_file(db.INSTALLED_PATH))}


TOOL = PackageSpec(
    name="tool", version="1.0-r0", description="A tool", url="https://example.org",
    depends=("so:libc.musl-x86_64.so.1",), provides=("cmd:tool=1.0-r0",),
    scripts={".pre-install": b"#!/bin/sh\naddgroup -S tool 2>/dev/null\nexit 0\n"},
    files={
        "usr/bin/tool": FileSpec(b"#!/bin/sh\necho tool\n", mode=0o755),
        "usr/bin/tool-alias": HardlinkSpec("usr/bin/tool"),
        "usr/bin/t": SymlinkSpec("tool"),
        "usr/sbin/pinger": FileSpec(b"ping", mode=0o4711, gid=42,
                                    xattrs=(("security.capability", b"\x01\x02"),)),
        "var/lib/tool": DirSpec(mode=0o700, uid=100, gid=101),
        ".dummy": b"",
    })


def test_install_writes_tree_and_database() -> None:
    tree = FileTree()
    tree.add_file("etc/group", b"root:x:0:root\n")
    report = _install(tree, TOOL, repositories=["https://example.org/main"])
    assert report.added == ["tool-1.0-r0"]  # type: ignore[attr-defined]

    tool = tree.entries["usr/bin/tool"]
    alias = tree.entries["usr/bin/tool-alias"]
    assert (tool.mode, alias.blob) == (0o755, tool.blob)
    assert tool.link_id and tool.link_id == alias.link_id
    assert tree.entries["usr/bin/t"].target == "tool"
    pinger = tree.entries["usr/sbin/pinger"]
    assert (pinger.mode, pinger.gid, pinger.xattrs) == (0o4711, 42,
                                                       (("security.capability", b"\x01\x02"),))
    lib = tree.entries["var/lib/tool"]
    assert (lib.mode, lib.uid, lib.gid) == (0o700, 100, 101)
    assert ".dummy" not in tree
    assert tree.entries["proc"].mode == 0o555 and tree.entries["tmp"].mode == 0o1777

    built = _verified(TOOL)
    text = tree.read_file(db.INSTALLED_PATH).decode()
    cap = db.xattr_digest([("security.capability", b"\x01\x02")])
    tool_z = db.q1_of(b"#!/bin/sh\necho tool\n")
    assert text == (
        f"C:{built.checksum}\nP:tool\nV:1.0-r0\nA:x86_64\nS:{built.file_size}\n"
        f"I:{built.info.size}\nT:A tool\nU:https://example.org\nL:MIT\no:tool\n"
        "t:1700000000\nD:so:libc.musl-x86_64.so.1\np:cmd:tool=1.0-r0\n"
        "F:usr\nF:usr/bin\n"
        f"R:t\na:0:0:777\nZ:{db.q1_of(b'tool')}\n"
        f"R:tool\na:0:0:755\nZ:{tool_z}\n"
        f"R:tool-alias\na:0:0:755\nZ:{tool_z}\n"
        f"F:usr/sbin\nR:pinger\na:0:42:4711:{cap}\nZ:{db.q1_of(b'ping')}\n"
        "F:var\nF:var/lib\nF:var/lib/tool\nM:100:101:700\n\n")
    scripts = db.parse_scripts_tar(tree.read_file(db.SCRIPTS_PATH))
    assert [(s.member_name, s.mtime) for s in scripts] == [
        (f"tool-1.0-r0.{built.checksum}.pre-install", EPOCH)]
    assert tree.read_file(db.WORLD_PATH) == b"tool\n"
    assert tree.read_file(db.ARCH_PATH) == b"x86_64\n"
    assert tree.read_file(db.REPOSITORIES_PATH) == b"https://example.org/main\n"
    assert tree.read_file(f"etc/apk/keys/{KEY.name}") == KEY.public_pem
    assert tree.entries[db.LOCK_PATH].mode == 0o600
    assert tree.read_file(db.TRIGGERS_PATH) == b""

    assert [(s.package, s.script, s.effects) for s in report.scripts] == [  # type: ignore[attr-defined]
        ("tool-1.0-r0", "pre-install", ["created group tool (gid 100)"])]
    assert tree.read_file("etc/group") == b"root:x:0:root\ntool:x:100:\n"


def test_file_conflict_names_both_packages() -> None:
    a = PackageSpec(name="a", version="1-r0", files={"etc/x.conf": b"a"})
    b = PackageSpec(name="b", version="2-r0", files={"etc/x.conf": b"b"})
    with pytest.raises(InstallError) as info:
        _install(FileTree(), a, b)
    assert str(info.value) == ("package b-2-r0 (b-2-r0.apk): file /etc/x.conf conflicts with "
                               "package a-1-r0 (different content; b does not replace a)")


@pytest.mark.parametrize("b", [
    PackageSpec(name="b", version="2-r0", replaces=("a",), files={"etc/x.conf": b"b"}),
    PackageSpec(name="b", version="2-r0", origin="a", files={"etc/x.conf": b"b"}),
    PackageSpec(name="b", version="2-r0", files={"etc/x.conf": b"a"}),
], ids=["replaces", "same-origin", "identical"])
def test_allowed_overwrite_moves_ownership(b: PackageSpec) -> None:
    a = PackageSpec(name="a", version="1-r0", files={"etc/x.conf": b"a", "etc/a": b"1"})
    tree = FileTree()
    _install(tree, a, b)
    records = _db(tree)
    assert records["a"].paths() == ["etc/a"]
    assert records["b"].paths() == ["etc/x.conf"]
    assert tree.read_file("etc/x.conf") == (b"a" if b.name == "b" and not b.replaces
                                            and not b.origin else b"b")


def test_replaces_priority_keeps_the_old_file() -> None:
    a = PackageSpec(name="a", version="1-r0", replaces=("b",), replaces_priority=10,
                    files={"etc/x.conf": b"a"})
    b = PackageSpec(name="b", version="2-r0", files={"etc/x.conf": b"b"})
    tree = FileTree()
    _install(tree, a, b)
    assert tree.read_file("etc/x.conf") == b"a"
    assert _db(tree)["b"].paths() == []


def test_upgrade_removes_old_files_and_replaces_record() -> None:
    v1 = PackageSpec(name="tool", version="1.0-r0", files={
        "usr/bin/tool": b"v1", "usr/share/tool/old.txt": b"old", "etc/tool.conf": b"c"},
        scripts={".post-install": b"#!/bin/sh\n"})
    v2 = PackageSpec(name="tool", version="2.0-r0", files={
        "usr/bin/tool": b"v2", "etc/tool.conf": b"c"},
        scripts={".post-upgrade": b"#!/bin/sh\nadd-shell /usr/bin/tool\n"})
    other = PackageSpec(name="other", version="1-r0", files={"usr/bin/other": b"o"})
    tree = FileTree()
    tree.add_file("etc/shells", b"/bin/sh\n")
    _install(tree, v1, other)
    report = _install(tree, v2, world=["other", "tool"])
    assert report.upgraded == ["tool 1.0-r0 -> 2.0-r0"]  # type: ignore[attr-defined]
    assert report.removed_paths == [  # type: ignore[attr-defined]
        "usr/share/tool/old.txt", "usr/share/tool", "usr/share"]
    assert "usr/share" not in tree and "usr/bin/other" in tree
    assert tree.read_file("usr/bin/tool") == b"v2"
    records = _db(tree)
    assert [r.version for r in records.values()] == ["1-r0", "2.0-r0"]
    assert [s.action for s in db.parse_scripts_tar(tree.read_file(db.SCRIPTS_PATH))] == [
        "post-upgrade"]
    assert tree.read_file("etc/shells") == b"/bin/sh\n/usr/bin/tool\n"
    again = _install(tree, v2, world=["other", "tool"])
    assert again.unchanged == ["tool-2.0-r0"]  # type: ignore[attr-defined]


def test_triggers_are_recorded_and_fired() -> None:
    ca = PackageSpec(name="ca-certificates", version="1-r0", triggers=("/usr/share/ca-certificates*",),
                     files={"usr/share/ca-certificates/x.crt": b"X"},
                     scripts={".trigger": b"#!/bin/sh\nupdate-ca-certificates --fresh\n"})
    tree = FileTree()
    report = _install(tree, ca)
    checksum = _verified(ca).checksum
    assert tree.read_file(db.TRIGGERS_PATH) == (
        f"{checksum} /usr/share/ca-certificates*\n".encode())
    assert tree.read_file("etc/ssl/certs/ca-certificates.crt") == b"X\n"
    trigger = report.scripts[-1]  # type: ignore[attr-defined]
    assert (trigger.script, trigger.effects) == (
        "trigger", ["fired by /usr/share/ca-certificates",
                    "rebuilt /etc/ssl/certs/ca-certificates.crt"])


def test_package_into_real_minirootfs_keeps_its_database() -> None:
    if not MINIROOTFS.exists():
        pytest.skip(f"real Alpine minirootfs {MINIROOTFS} is absent (needs ../shared)")
    tree = FileTree()
    with MINIROOTFS.open("rb") as fh:
        load_tar(fh, tree, source=MINIROOTFS.name)
    original = tree.read_file(db.INSTALLED_PATH)
    scripts = tree.read_file(db.SCRIPTS_PATH)
    extra = PackageSpec(name="svc", version="1-r0", files={"etc/svc.conf": b"x"},
                        scripts={".pre-install": b"#!/bin/sh\naddgroup -S svc\n"
                                 b"adduser -S -D -H -G svc svc\n"})
    world = db.parse_world(tree.read_file(db.WORLD_PATH)) + ["svc"]
    install_packages(tree, [PackageToInstall(_verified(extra))], world=world, arch="x86_64",
                     keys={}, epoch=EPOCH)
    records = db.parse_installed(tree.read_file(db.INSTALLED_PATH))
    assert db.format_installed([r for r in records if r.name != "svc"]) == original
    new_scripts = tree.read_file(db.SCRIPTS_PATH)
    assert new_scripts[:len(scripts) - 1024] == scripts[:-1024]
    assert tree.read_file("etc/passwd").decode().splitlines()[-1] == (
        "svc:x:100:101:Linux User,,,:/home/svc:/bin/false")
    assert tree.read_file(db.REPOSITORIES_PATH).startswith(b"https://dl-cdn.alpinelinux.org")
    assert sum(1 for e in tree.walk() if e.type == EntryType.SYMLINK
               and e.target == "/bin/busybox") == 304


def test_package_listed_twice_is_refused() -> None:
    a = PackageSpec(name="a", version="1-r0", files={"etc/a": b"1"})
    with pytest.raises(InstallError, match="package a is listed twice in the install set$"):
        install_packages(FileTree(), [_verified(a), _verified(a)], world=["a"], arch="x86_64",
                         keys={})


def test_scripts_tar_member_order_is_install_order(tmp_path: Path) -> None:
    a = PackageSpec(name="zz", version="1-r0", files={"etc/z": b"1"},
                    scripts={".post-install": b"#!/bin/sh\n", ".pre-install": b"#!/bin/sh\n"})
    b = PackageSpec(name="aa", version="1-r0", files={"etc/a": b"1"},
                    scripts={".trigger": b"#!/bin/sh\n"}, triggers=("/etc",))
    tree = FileTree()
    _install(tree, a, b)
    path = tmp_path / "scripts.tar"
    path.write_bytes(tree.read_file(db.SCRIPTS_PATH))
    with tarfile.open(path) as archive:
        assert [m.name.rsplit(".", 1)[1] for m in archive] == [
            "pre-install", "post-install", "trigger"]
    assert [p.name for p in db.parse_installed(tree.read_file(db.INSTALLED_PATH))] == ["aa", "zz"]


def test_result_is_independent_of_worker_count() -> None:
    from composer.writers.tar import write_tar

    specs = [PackageSpec(name=f"p{i}", version="1-r0",
                         files={f"usr/share/p{i}/f": bytes([i]) * (300_000 + i),
                                "usr/share/common": b"same"}) for i in range(6)]
    outputs = []
    for workers in (1, 2, 4):
        tree = FileTree()
        install_packages(tree, [_verified(s) for s in specs], world=["p0"], arch="x86_64",
                         keys={}, epoch=EPOCH, workers=workers)
        out = io.BytesIO()
        write_tar(tree, out, mtime=EPOCH)
        outputs.append(out.getvalue())
        tree.close()
    assert outputs[0] == outputs[1] == outputs[2]


def _to_fetch(spec: PackageSpec, fetched: list[str], *, size: int,
              error: Exception | None = None) -> PackageToFetch:
    def fetch() -> VerifiedPackage:
        fetched.append(spec.name)
        if error is not None:
            raise error
        return _verified(spec)

    return PackageToFetch(PackageInfo(name=spec.name, version=spec.version, size=size),
                          fetch=fetch)


def test_packages_to_fetch_start_largest_first_and_merge_in_resolver_order() -> None:
    """The index's sizes pick the loading order; the given order still decides which
    package's file a later one replaces, and the database, as for verified packages."""
    specs = [PackageSpec(name=name, version="1-r0", replaces=replaces,
                         files={"usr/share/shared": name.encode()})
             for name, replaces in (("small", ()), ("big", ("small",)), ("mid", ("big",)))]
    fetched: list[str] = []
    to_fetch = [_to_fetch(s, fetched, size=size) for s, size in zip(specs, (10, 300, 20), strict=True)]
    tree = FileTree()
    report = install_packages(tree, to_fetch, world=["mid"], arch="x86_64", keys={},
                              epoch=EPOCH, workers=1)
    assert fetched == ["big", "mid", "small"]
    assert report.added == ["small-1-r0", "big-1-r0", "mid-1-r0"]
    assert tree.read_file("usr/share/shared") == b"mid"

    given = FileTree()
    install_packages(given, [PackageToInstall(_verified(s), f.index)
                             for s, f in zip(specs, to_fetch, strict=True)],
                     world=["mid"], arch="x86_64", keys={}, epoch=EPOCH, workers=1)
    assert tree.read_file(db.INSTALLED_PATH) == given.read_file(db.INSTALLED_PATH)


def test_first_failure_in_resolver_order_is_raised_and_nothing_merged() -> None:
    specs = [PackageSpec(name=f"p{i}", version="1-r0", files={f"usr/share/p{i}": b"x"})
             for i in range(4)]
    fetched: list[str] = []
    items = [_to_fetch(specs[0], fetched, size=1),
             _to_fetch(specs[1], fetched, size=2, error=InstallError("p1 failed")),
             _to_fetch(specs[2], fetched, size=3, error=InstallError("p2 failed")),
             _to_fetch(specs[3], fetched, size=4)]
    tree = FileTree()
    with pytest.raises(InstallError, match="^p1 failed$"):
        install_packages(tree, items, world=["p0"], arch="x86_64", keys={}, epoch=EPOCH,
                         workers=1)
    assert fetched == ["p3", "p2", "p1", "p0"]
    assert not any(p.startswith("usr/share/p") for p in tree.entries)
    assert db.INSTALLED_PATH not in tree


def test_a_package_to_fetch_listed_twice_is_refused_before_any_fetch() -> None:
    fetched: list[str] = []
    spec = PackageSpec(name="twice", version="1-r0", files={"usr/share/t": b"t"})
    with pytest.raises(InstallError, match="twice-1-r0: package twice is listed twice"):
        install_packages(FileTree(), [_to_fetch(spec, fetched, size=1),
                                      _to_fetch(spec, fetched, size=1)],
                         world=["twice"], arch="x86_64", keys={}, epoch=EPOCH)
    assert fetched == []
