"""Script-effect emulation: busybox applet tables, accounts, shells, CA bundle, services."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from composer.apk import db
from composer.apk.effects import (
    AppletTableError,
    ScriptContext,
    busybox_applet_paths,
    emulate_script,
    finish_scripts,
    install_busybox_links,
    rebuild_ca_bundle,
)
from composer.archive import load_tar
from composer.system.accounts import AccountError, AccountFiles, UserSpec
from composer.system.shells import add_shells
from composer.tree import EntryType, FileTree

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "alpine-real"
MINIROOTFS = SHARED / "minirootfs" / "alpine-minirootfs-3.20.3-x86_64.tar.gz"
BUSYBOX_APK = SHARED / "iso-3.19.1-x86_64" / "apks" / "x86_64" / "busybox-1.36.1-r15.apk"
EPOCH = 1700000000

PASSWD = (b"root:x:0:0:root:/root:/bin/sh\n"
          b"guest:x:405:100:guest:/dev/null:/sbin/nologin\n"
          b"nobody:x:65534:65534:nobody:/:/sbin/nologin\n")
GROUP = b"root:x:0:root\nusers:x:100:games\nnogroup:x:65533:\nnobody:x:65534:\n"
SHADOW = b"root:!::0:::::\nnobody:!::0:::::\n"


@pytest.fixture(scope="module")
def minirootfs() -> FileTree:
    if not MINIROOTFS.exists():
        pytest.skip(f"real Alpine minirootfs {MINIROOTFS} is absent (needs ../shared)")
    tree = FileTree()
    with MINIROOTFS.open("rb") as fh:
        load_tar(fh, tree, source=MINIROOTFS.name)
    return tree


def _apk_member(apk: Path, name: str) -> bytes:
    with gzip.open(apk) as fh, tarfile.open(fileobj=io.BytesIO(fh.read())) as archive:
        member = archive.extractfile(name)
        assert member is not None
        return member.read()


def _accounts_tree() -> FileTree:
    tree = FileTree()
    tree.add_file("etc/passwd", PASSWD)
    tree.add_file("etc/group", GROUP)
    tree.add_file("etc/shadow", SHADOW, mode=0o640, gid=42)
    tree.add_dir("home")
    return tree


# ---------------------------------------------------------------- busybox


def test_applet_table_matches_minirootfs_symlinks(minirootfs: FileTree) -> None:
    derived = busybox_applet_paths(minirootfs.read_file("bin/busybox"))
    links = {e.path for e in minirootfs.walk()
             if e.type == EntryType.SYMLINK and e.target == "/bin/busybox"}
    assert len(derived) == len(set(derived)) == 304
    assert set(derived) == links
    assert derived == minirootfs.read_file("etc/busybox-paths.d/busybox").decode().split()
    assert derived[:3] == ["usr/bin/[", "usr/bin/[[", "sbin/acpid"]


def test_applet_table_of_packaged_busybox() -> None:
    if not BUSYBOX_APK.exists():
        pytest.skip(f"real busybox package {BUSYBOX_APK} is absent (needs ../shared)")
    binary = _apk_member(BUSYBOX_APK, "bin/busybox")
    paths_d = _apk_member(BUSYBOX_APK, "etc/busybox-paths.d/busybox").decode().split()
    assert busybox_applet_paths(binary) == paths_d


def test_install_links_recreates_minirootfs_links(minirootfs: FileTree) -> None:
    tree = FileTree(store=minirootfs.store, entries=dict(minirootfs.entries))
    removed = sorted(p for p, e in tree.entries.items()
                     if e.type == EntryType.SYMLINK and e.target == "/bin/busybox")
    for path in removed:
        tree.remove(path)
    tree.add_file("bin/ls", b"not busybox")
    created = install_busybox_links(tree, mtime=EPOCH)
    assert sorted(created) == [p for p in removed if p != "bin/ls"]
    assert tree.read_file("bin/ls") == b"not busybox"
    assert tree.entries["usr/bin/wget"].target == "/bin/busybox"
    assert install_busybox_links(tree) == []


def test_applet_parser_refuses_unknown_binaries() -> None:
    with pytest.raises(AppletTableError) as info:
        busybox_applet_paths(b"\x7fELF" + b"\0" * 100, source="bin/busybox")
    assert str(info.value) == "bin/busybox: no applet name table ('[', '[[', ...) found"
    names = b"\0[\0[[\0ash\0ls\0\0"
    with pytest.raises(AppletTableError) as info:
        busybox_applet_paths(b"\xff" * 64 + names + b"\xff" * 64, source="bin/busybox")
    assert str(info.value) == ("bin/busybox: expected one applet install-location table of "
                               "2 bytes for 4 applets, found 0")
    tiny = b"\xff" * 8 + bytes([0x33, 0x13]) + b"\xff" * 8 + names
    assert busybox_applet_paths(tiny) == ["usr/bin/[", "usr/bin/[[", "usr/bin/ash", "bin/ls"]


# ---------------------------------------------------------------- accounts


def test_busybox_post_install_creates_klogd(minirootfs: FileTree) -> None:
    tree = FileTree(store=minirootfs.store, entries=dict(minirootfs.entries))
    scripts = db.parse_scripts_tar(tree.read_file(db.SCRIPTS_PATH))
    post_install = next(s for s in scripts if s.name == "busybox" and s.action == "post-install")
    ctx = ScriptContext(tree=tree, accounts=AccountFiles(tree, epoch=EPOCH), mtime=EPOCH)
    report = emulate_script(ctx, "busybox-1.36.1-r29", "post-install", post_install.data)
    assert report.effects == [
        "mkdir -p /bin /sbin /usr/bin /usr/sbin",
        "applet links to /bin/busybox (busybox --install -s)",
        "created group klogd (gid 101)",
        "created user klogd (uid 100, gid 101)",
    ]
    assert report.unhandled_lines == [] and report.failures == []
    done = finish_scripts(ctx, ca_certificates_installed=False)
    assert done == ["updated /etc/passwd", "updated /etc/group", "updated /etc/shadow",
                    "0 applet links to /bin/busybox"]
    assert tree.read_file("etc/passwd").decode().splitlines()[-1] == (
        "klogd:x:100:101:klogd:/dev/null:/sbin/nologin")
    assert tree.read_file("etc/group").decode().splitlines()[-1] == "klogd:x:101:klogd"
    assert tree.read_file("etc/shadow").decode().splitlines()[-1] == (
        f"klogd:!:{EPOCH // 86400}:0:99999:7:::")
    shadow = tree.entries["etc/shadow"]
    assert (shadow.mode, shadow.gid) == (0o640, 42)
    assert "home/klogd" not in tree and "dev/null" not in tree


def test_adduser_defaults_follow_busybox() -> None:
    tree = _accounts_tree()
    files = AccountFiles(tree, epoch=EPOCH)
    assert files.add_user(UserSpec("alice", system=False, create_home=True)) == (1000, 1000)
    assert files.add_user(UserSpec("daemon1")) == (100, 65533)
    with pytest.raises(AccountError, match="^user 'alice' in use$"):
        files.add_user(UserSpec("alice"))
    with pytest.raises(AccountError, match="^unknown group nosuch$"):
        files.add_user(UserSpec("bob", group="nosuch"))
    with pytest.raises(AccountError, match="^gid '100' in use by group users$"):
        files.add_group("other", gid=100)
    files.save(mtime=EPOCH)
    assert tree.read_file("etc/passwd").decode().splitlines()[-2:] == [
        "alice:x:1000:1000:Linux User,,,:/home/alice:/bin/sh",
        "daemon1:x:100:65533:Linux User,,,:/home/daemon1:/bin/false"]
    assert tree.read_file("etc/group").decode().splitlines()[-2:] == [
        "nobody:x:65534:", "alice:x:1000:"]
    assert "nogroup:x:65533:daemon1" in tree.read_file("etc/group").decode().splitlines()
    home = tree.entries["home/alice"]
    assert (home.type, home.mode, home.uid, home.gid) == (EntryType.DIR, 0o2755, 1000, 1000)


def test_script_lines_unhandled_and_failures_are_reported() -> None:
    tree = _accounts_tree()
    ctx = ScriptContext(tree=tree, accounts=AccountFiles(tree, epoch=EPOCH), mtime=EPOCH)
    body = (b"#!/bin/sh\n# comment\n\n"
            b"addgroup -S -g 300 svc 2>/dev/null\n"
            b"adduser -S -D -H -h /var/lib/svc -s /sbin/nologin -G svc -g 'Service user' svc\n"
            b"adduser -S -G missing other 2>/dev/null || true\n"
            b"addgroup svc users\n"
            b"chown svc:svc /var/lib/svc\n"
            b"addgroup -S $name\n"
            b"exit 0\n")
    report = emulate_script(ctx, "svc-1.0-r0", "pre-install", body)
    assert report.effects == ["created group svc (gid 300)", "created user svc (uid 100, gid 300)",
                              "added user svc to group users"]
    assert report.unhandled_lines == ["chown svc:svc /var/lib/svc", "addgroup -S $name"]
    assert report.failures == ["line 6: adduser -S -G missing other: unknown group missing"]
    ctx.accounts.save(mtime=EPOCH)
    assert "svc:x:100:300:Service user:/var/lib/svc:/sbin/nologin" in tree.read_file(
        "etc/passwd").decode().splitlines()
    assert "svc:x:300:svc" in tree.read_file("etc/group").decode().splitlines()
    assert "users:x:100:games,svc" in tree.read_file("etc/group").decode().splitlines()


# ---------------------------------------------------------------- shells, CA, services


def test_add_shells_appends_missing_only() -> None:
    tree = FileTree()
    tree.add_file("etc/shells", b"# valid login shells\n/bin/sh\n/bin/ash\n")
    assert add_shells(tree, ["/bin/bash", "/bin/sh", "/bin/bash"]) == ["/bin/bash"]
    assert tree.read_file("etc/shells") == b"# valid login shells\n/bin/sh\n/bin/ash\n/bin/bash\n"
    ctx = ScriptContext(tree=tree, accounts=AccountFiles(tree, epoch=EPOCH), mtime=EPOCH)
    report = emulate_script(ctx, "zsh-5.9-r0", "post-install", b"#!/bin/sh\nadd-shell '/bin/zsh'\n")
    assert report.effects == ["add-shell /bin/zsh"]
    assert finish_scripts(ctx, ca_certificates_installed=False) == ["added /bin/zsh to /etc/shells"]
    assert tree.read_file("etc/shells").endswith(b"/bin/bash\n/bin/zsh\n")


def test_ca_bundle_concatenates_sorted_certificates() -> None:
    tree = FileTree()
    tree.add_file("usr/share/ca-certificates/mozilla/B.crt", b"B")
    tree.add_file("usr/share/ca-certificates/mozilla/A.crt", b"A\n")
    tree.add_file("usr/share/ca-certificates/mozilla/readme.txt", b"x")
    tree.add_file("usr/local/share/ca-certificates/local.crt", b"L\n")
    assert rebuild_ca_bundle(tree, mtime=EPOCH) == 3
    assert tree.read_file("etc/ssl/certs/ca-certificates.crt") == b"A\nB\nL\n"


def test_non_numeric_and_huge_ids_in_scripts_are_not_understood() -> None:
    """``int()`` used to turn these lines into an internal error (issue 11, root cause A)."""
    tree = _accounts_tree()
    ctx = ScriptContext(tree=tree, accounts=AccountFiles(tree, epoch=EPOCH), mtime=EPOCH)
    body = (b"addgroup -S -g abc svc\n"
            b"adduser -S -u " + b"9" * 4301 + b" svc\n"
            b"adduser -S -u \xc2\xb9\xc2\xb2 svc\n")
    report = emulate_script(ctx, "svc-1.0-r0", "pre-install", body)
    assert report.effects == []
    assert report.unhandled_lines == ["addgroup -S -g abc svc", "adduser -S -u " + "9" * 4301 + " svc",
                                      "adduser -S -u ¹² svc"]
