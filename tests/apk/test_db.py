"""The installed-database formats, checked byte for byte against a real Alpine root."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from composer.apk import db
from composer.errors import ArchiveError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "alpine-real"
EXTRACTED = SHARED / "rootfs-3.20.3-x86_64-extracted"
MINIROOTFS = SHARED / "minirootfs" / "alpine-minirootfs-3.20.3-x86_64.tar.gz"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real Alpine fixture {path} is absent (needs ../shared next to the repo)")
    return path


def _minirootfs_member(name: str) -> bytes:
    with tarfile.open(_need(MINIROOTFS)) as archive:
        fh = archive.extractfile(name)
        assert fh is not None
        return fh.read()


def test_real_installed_db_round_trips_byte_for_byte() -> None:
    raw = _need(EXTRACTED / "lib_apk_db_installed").read_bytes()
    packages = db.parse_installed(raw)
    assert [p.name for p in packages] == [
        "alpine-baselayout", "alpine-baselayout-data", "alpine-keys", "apk-tools", "busybox",
        "busybox-binsh", "ca-certificates-bundle", "libcrypto3", "libssl3", "musl", "musl-utils",
        "scanelf", "ssl_client", "zlib"]
    assert db.format_installed(packages) == raw


def test_real_installed_db_fields() -> None:
    packages = {p.name: p for p in db.parse_installed(
        _need(EXTRACTED / "lib_apk_db_installed").read_bytes())}
    binsh = packages["busybox-binsh"]
    assert (binsh.checksum, binsh.version, binsh.provider_priority) == (
        "Q1h1jh4GYF5YGESa/4YuEFuAtvNL8=", "1.36.1-r29", 100)
    assert binsh.provides == ["/bin/sh", "cmd:sh=1.36.1-r29"]
    assert binsh.replaces == ["busybox-initscripts"]
    assert binsh.paths() == ["bin/sh"]
    assert binsh.dirs[0].files[0] == db.DbFile(
        "sh", db.Acl(0, 0, 0o777), "Q1pcfTfDNEbNKQc2s1tia7da05M8Q=")
    layout = packages["alpine-baselayout"]
    assert layout.replaces_priority == 1000
    modes = {d.path: d.acl for d in layout.dirs if d.acl != db.DEFAULT_DIR_ACL}
    assert modes["root"] == db.Acl(0, 0, 0o700)
    assert modes["tmp"] == db.Acl(0, 0, 0o1777)
    data = packages["alpine-baselayout-data"]
    shadow = next(f for d in data.dirs if d.path == "etc" for f in d.files if f.name == "shadow")
    assert shadow.acl == db.Acl(0, 42, 0o640)


def test_real_world_triggers_and_scripts_round_trip() -> None:
    world = _need(EXTRACTED / "etc_apk_world").read_bytes()
    assert db.parse_world(world) == [
        "alpine-baselayout", "alpine-keys", "apk-tools", "busybox", "libc-utils"]
    assert db.format_world(db.parse_world(world)) == world

    triggers = _minirootfs_member("./lib/apk/db/triggers")
    parsed = db.parse_triggers(triggers)
    assert parsed == [db.TriggerLine("Q1yY8lhMF1VhgegJgkcXfqaNabDJw=",
                                     ("/bin", "/usr/bin", "/sbin", "/usr/sbin", "/lib/modules/*"))]
    assert db.format_triggers(parsed) == triggers

    scripts_tar = _minirootfs_member("./lib/apk/db/scripts.tar")
    scripts = db.parse_scripts_tar(scripts_tar)
    assert [(s.name, s.version, s.action) for s in scripts][:4] == [
        ("busybox", "1.36.1-r29", "post-install"), ("busybox", "1.36.1-r29", "post-upgrade"),
        ("busybox", "1.36.1-r29", "trigger"), ("alpine-baselayout", "3.6.5-r0", "pre-install")]
    assert scripts[0].checksum == "Q1yY8lhMF1VhgegJgkcXfqaNabDJw="
    assert scripts[0].data.startswith(b"#!/bin/busybox sh\n")
    assert db.format_scripts_tar(scripts) == scripts_tar


def test_empty_world_and_scripts() -> None:
    assert db.format_world([]) == b"\n"
    assert db.format_world(["busybox", "alpine-base", "busybox"]) == b"alpine-base\nbusybox\n"
    assert db.format_scripts_tar([]) == b"\0" * 1024
    assert db.parse_scripts_tar(b"\0" * 1024) == []


def test_digests() -> None:
    assert db.q1_of(b"") == "Q12jmj7l5rSw0yVb/vlWAYkK/YBwk="
    assert db.q1_from_hex("da39a3ee5e6b4b0d3255bfef95601890afd80709") == db.q1_of(b"")
    with pytest.raises(ArchiveError, match="not a SHA-1 digest"):
        db.q1_from_hex("abcd")
    assert db.xattr_digest([]) == ""
    one = db.xattr_digest([("security.capability", b"\x01\x00")])
    assert one.startswith("Q1") and len(one) == 30
    assert db.xattr_digest([("b", b"2"), ("a", b"1")]) == db.xattr_digest([("a", b"1"), ("b", b"2")])


def test_bad_input_names_line() -> None:
    with pytest.raises(ArchiveError) as info:
        db.parse_installed(b"C:Q1x\nP:a\nV:1-r0\nnonsense\n\n")
    assert str(info.value) == "lib/apk/db/installed line 4: expected 'X:value', got 'nonsense'"
    with pytest.raises(ArchiveError) as info:
        db.parse_installed(b"P:a\nV:1-r0\nR:file\n\n")
    assert str(info.value) == "lib/apk/db/installed line 3: file 'file' before any F: directory line"
    with pytest.raises(ArchiveError) as info:
        db.parse_installed(b"P:a\nV:1-r0\nS:big\n\n")
    assert str(info.value) == "lib/apk/db/installed line 3: S: value 'big' is not an integer"
    with pytest.raises(ArchiveError) as info:
        db.parse_installed(b"P:a\nV:1-r0\nF:etc\nR:x\na:0:0\n\n")
    assert str(info.value) == ("lib/apk/db/installed line 5: bad owner/mode '0:0' "
                               "(want uid:gid:mode[:digest])")


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._+-", min_size=1, max_size=12)
_file = st.builds(db.DbFile, name=_word,
                  acl=st.builds(db.Acl, st.integers(0, 70000), st.integers(0, 70000),
                                st.integers(0, 0o7777)),
                  digest=st.sampled_from(["", db.q1_of(b"x")]))
_dir = st.builds(db.DbDir, path=st.sampled_from(["", "etc", "usr/bin", "var/lib/x"]),
                 acl=st.builds(db.Acl, st.integers(0, 999), st.integers(0, 999),
                               st.integers(0, 0o7777)),
                 files=st.lists(_file, max_size=3))
_pkg = st.builds(db.InstalledPackage, checksum=st.just(db.q1_of(b"c")), name=_word,
                 version=st.just("1.0-r0"), arch=st.just("x86_64"),
                 size=st.integers(0, 10**9), installed_size=st.integers(0, 10**9),
                 description=st.text(alphabet="abc XYZ()", max_size=20),
                 origin=st.sampled_from(["", "o"]), build_time=st.integers(0, 2**33),
                 provider_priority=st.integers(0, 1000), replaces_priority=st.integers(0, 1000),
                 depends=st.lists(_word, max_size=3), provides=st.lists(_word, max_size=3),
                 install_if=st.lists(_word, max_size=2), replaces=st.lists(_word, max_size=2),
                 dirs=st.lists(_dir, max_size=3))


@given(st.lists(_pkg, max_size=4))
def test_format_parse_round_trip(packages: list[db.InstalledPackage]) -> None:
    text = db.format_installed(packages)
    assert db.parse_installed(text) == packages
    assert db.format_installed(db.parse_installed(text)) == text
