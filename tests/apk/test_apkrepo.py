"""The synthetic signed-repository builder makes real-format, deterministic files."""

from __future__ import annotations

import io
import tarfile
import zlib
from pathlib import Path

import pytest

from composer.apk.index import parse_apkindex
from composer.apk.package import verify_apk
from composer.apk.signing import split_gzip_members, verify_apkindex
from composer.errors import VerificationError
from tests.helpers.apkrepo import (
    DirSpec,
    FileSpec,
    HardlinkSpec,
    PackageSpec,
    SymlinkSpec,
    build_apk,
    build_package,
    build_repository,
    signing_key,
)

GZIP_HEADER = bytes.fromhex("1f8b0800000000000203")

SPEC = PackageSpec(
    "tool", "2.1-r3", description="a tool", url="https://example.org/tool", license="MIT",
    origin="toolsrc", maintainer="A <a@example.org>", commit="deadbeef",
    depends=("so:libc.musl-x86_64.so.1", "musl>=1.2"), provides=("cmd:tool=2.1-r3",),
    install_if=("tool-base", "docs"), provider_priority=5,
    files={"usr/bin/tool": FileSpec(b"ELF" * 100, mode=0o755),
           "usr/bin/t": SymlinkSpec("tool"),
           "usr/bin/tool2": HardlinkSpec("usr/bin/tool"),
           "var/empty": DirSpec(mode=0o700),
           "etc/tool.conf": b"a=b\n"},
    scripts={".post-install": b"#!/bin/sh\n"},
)


def _members(data: bytes) -> list[bytes]:
    return [zlib.decompress(m, 31) for m in split_gzip_members(data)]


def test_build_is_deterministic() -> None:
    key = signing_key()
    assert build_apk(SPEC, key) == build_apk(SPEC, key)
    assert build_apk(SPEC, key) != build_apk(SPEC, signing_key("other"))


def test_package_layout_matches_abuild() -> None:
    data = build_apk(SPEC, signing_key())
    raw = split_gzip_members(data)
    assert len(raw) == 3
    assert all(m.startswith(GZIP_HEADER) for m in raw)
    sig, control, payload = _members(data)
    for cut in (sig, control):
        assert len(cut) % 512 == 0 and cut[-512:] != b"\0" * 512
    assert len(payload) % 10240 == 0 and payload.endswith(b"\0" * 1024)
    with tarfile.open(fileobj=io.BytesIO(control)) as archive:
        assert [m.name for m in archive] == [".PKGINFO", ".post-install"]
    with tarfile.open(fileobj=io.BytesIO(payload)) as archive:
        members = {m.name: m for m in archive}
    names = list(members)
    assert names == sorted(names, key=lambda n: n.encode())
    assert members["var/empty"].isdir() and members["var/empty"].mode == 0o700
    assert members["usr"].isdir() and members["usr/bin"].isdir()
    assert b"var/empty/\0" in payload and b"usr/bin/\0" in payload  # directory names end in /
    tool, link, hard = members["usr/bin/tool"], members["usr/bin/t"], members["usr/bin/tool2"]
    import hashlib
    assert tool.pax_headers["APK-TOOLS.checksum.SHA1"] == hashlib.sha1(b"ELF" * 100).hexdigest()
    assert link.pax_headers["APK-TOOLS.checksum.SHA1"] == hashlib.sha1(b"tool").hexdigest()
    assert hard.islnk() and hard.linkname == "usr/bin/tool"
    assert "APK-TOOLS.checksum.SHA1" not in hard.pax_headers
    assert "APK-TOOLS.checksum.SHA1" not in members["usr"].pax_headers
    assert {m.mtime for m in members.values()} == {SPEC.builddate}


def test_pkginfo_order_and_size() -> None:
    built = build_package(SPEC, signing_key())
    keys = [line.split(" = ")[0] for line in built.pkginfo.decode().splitlines()
            if not line.startswith("#")]
    assert keys == ["pkgname", "pkgver", "pkgdesc", "url", "builddate", "packager", "size",
                    "arch", "origin", "commit", "maintainer", "provider_priority", "license",
                    "depend", "depend", "provides", "install_if", "datahash"]
    assert built.installed_size == 300 + 4  # the hard link is counted once


def test_hardlink_sorting_before_its_target() -> None:
    spec = PackageSpec("h", "1-r0", files={"b/file": b"data", "a/link": HardlinkSpec("b/file")})
    with tarfile.open(fileobj=io.BytesIO(_members(build_apk(spec, signing_key()))[2])) as tar:
        members = {m.name: m for m in tar}
    assert members["a/link"].isreg() and members["b/file"].islnk()
    assert members["b/file"].linkname == "a/link"


def test_repository_round_trip(tmp_path: Path) -> None:
    key = signing_key()
    other_spec = PackageSpec("lib", "1.0-r0", files={"usr/lib/libx.so.1": b"\0" * 10})
    base = build_repository(tmp_path / "repo", [SPEC, other_spec], key, arch="x86_64",
                            description="test-repo 1")
    arch_dir = base / "x86_64"
    assert sorted(p.name for p in arch_dir.iterdir()) == [
        "APKINDEX.tar.gz", "lib-1.0-r0.apk", "tool-2.1-r3.apk"]
    index = verify_apkindex((arch_dir / "APKINDEX.tar.gz").read_bytes(), key.trusted(),
                            source="repo")
    assert index.description == "test-repo 1" and index.signer == key.name
    assert index.text.decode().split("\n\n")[0].splitlines() == [
        f"C:{build_package(SPEC, key).checksum}", "P:tool", "V:2.1-r3", "A:x86_64",
        f"S:{(arch_dir / 'tool-2.1-r3.apk').stat().st_size}", "I:304", "T:a tool",
        "U:https://example.org/tool", "L:MIT", "o:toolsrc", "m:A <a@example.org>",
        f"t:{SPEC.builddate}", "c:deadbeef", "k:5", "D:so:libc.musl-x86_64.so.1 musl>=1.2",
        "p:cmd:tool=2.1-r3", "i:tool-base docs"]
    parsed = parse_apkindex(index.text, source="repo")
    for record in parsed.packages:
        path = arch_dir / record.filename
        assert record.size == path.stat().st_size
        pkg = verify_apk(path, key.trusted(), source="repo", expected_checksum=record.checksum)
        assert pkg.info.size == record.installed_size

    again = build_repository(tmp_path / "again", [SPEC, other_spec], key,
                             description="test-repo 1")
    for p in arch_dir.iterdir():
        assert (again / "x86_64" / p.name).read_bytes() == p.read_bytes()


def test_repository_hostile_variants(tmp_path: Path) -> None:
    key, other = signing_key(), signing_key("other")
    swapped = build_apk(PackageSpec("tool", "2.1-r3", description="evil"), key)
    base = build_repository(tmp_path / "r", [SPEC], key,
                            substitute={"tool-2.1-r3": swapped})
    index = verify_apkindex((base / "x86_64" / "APKINDEX.tar.gz").read_bytes(), key.trusted(),
                            source="r")
    record = parse_apkindex(index.text, source="r").packages[0]
    with pytest.raises(VerificationError) as err:
        verify_apk(base / "x86_64" / "tool-2.1-r3.apk", key.trusted(), source="r",
                   expected_checksum=record.checksum)
    assert str(err.value).startswith("package tool-2.1-r3 (r): control checksum mismatch (")

    foreign = build_repository(tmp_path / "f", [SPEC], key, index_key=other)
    with pytest.raises(VerificationError) as err:
        verify_apkindex((foreign / "x86_64" / "APKINDEX.tar.gz").read_bytes(), key.trusted(),
                        source="f")
    assert str(err.value) == f"f: signed by unknown key {other.name}"
