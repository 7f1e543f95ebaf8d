"""verify_apk / load_package_data on real Alpine packages and on hostile synthetic ones."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from pathlib import Path

import pytest

from composer.apk.datatar import load_package_data
from composer.apk.keys import TrustedKeys
from composer.apk.package import (
    VerifiedPackage,
    control_checksum,
    parse_checksum,
    parse_pkginfo,
    verify_apk,
)
from composer.apk.signing import split_gzip_members, verify_apkindex
from composer.errors import ArchiveError, VerificationError
from composer.tree import EntryType, FileTree
from tests.helpers.apkrepo import (
    FileSpec,
    HardlinkSpec,
    PackageSpec,
    SymlinkSpec,
    build_package,
    signing_key,
)

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "alpine-real"
ISO = "iso-3.19.1-x86_64/apks/x86_64"
KEY_X86_64 = "alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub"
KEY_AARCH64 = "alpine-devel@lists.alpinelinux.org-616ae350.rsa.pub"
ISO_PACKAGES = [
    "alpine-base-3.19.1-r0", "alpine-baselayout-3.4.3-r2", "alpine-baselayout-data-3.4.3-r2",
    "alpine-keys-2.4-r1", "alpine-release-3.19.1-r0", "apk-tools-2.14.0-r5",
    "busybox-1.36.1-r15", "busybox-binsh-1.36.1-r15", "ca-certificates-bundle-20230506-r0",
    "libc-utils-0.7.2-r5", "libcrypto3-3.1.4-r5", "libssl3-3.1.4-r5",
    "musl-1.2.4_git20230717-r4", "musl-utils-1.2.4_git20230717-r4", "scanelf-1.3.7-r2",
    "ssl_client-1.36.1-r15", "zlib-1.3.1-r0",
]


def real(relative: str) -> Path:
    path = REAL / relative
    if not path.exists():
        pytest.skip(f"real Alpine fixture {path} is absent (needs ../shared next to the repo)")
    return path


@pytest.fixture(scope="module")
def alpine_keys() -> TrustedKeys:
    folder = real("apk-keys")
    return TrustedKeys.from_files({p.name: p.read_bytes() for p in sorted(folder.iterdir())})


@pytest.fixture(scope="module")
def iso_checksums(alpine_keys: TrustedKeys) -> dict[str, str]:
    """name-version → C: of the ISO's own signed index, by a plain text scan."""
    index = verify_apkindex(real(f"{ISO}/APKINDEX.tar.gz").read_bytes(), alpine_keys,
                            source="iso")
    found = {}
    for record in index.text.decode().split("\n\n"):
        fields = dict(line.split(":", 1) for line in record.splitlines() if line)
        if fields:
            found[f"{fields['P']}-{fields['V']}"] = fields["C"]
    return found


# --- real packages -------------------------------------------------------------------


@pytest.mark.parametrize("name_version", ISO_PACKAGES)
def test_real_iso_package_verifies(name_version: str, alpine_keys: TrustedKeys,
                                   iso_checksums: dict[str, str]) -> None:
    path = real(f"{ISO}/{name_version}.apk")
    pkg = verify_apk(path, alpine_keys, source="iso",
                     expected_checksum=iso_checksums[name_version])
    assert pkg.info.name_version == name_version
    assert pkg.checksum == iso_checksums[name_version]
    assert (pkg.signer, pkg.signature_algorithm) == (KEY_X86_64, "RSA")
    assert pkg.data_sha256 == pkg.info.datahash
    members = split_gzip_members(path.read_bytes())
    assert pkg.control_member == members[-2]
    assert pkg.data_offset == len(members[0]) + len(members[1])
    assert pkg.data_size == len(members[2]) and pkg.file_size == path.stat().st_size
    with FileTree() as owner:
        tree, contents = load_package_data(pkg, owner.store)
        with pkg.open_data() as raw, tarfile.open(fileobj=raw, mode="r|") as archive:
            names = [m.name.rstrip("/") for m in archive
                     if not (m.name.startswith(".") and "/" not in m.name)]
        assert sorted(contents.paths) == sorted(names)
        for p, digest in contents.sha1.items():
            entry = tree.get(p)
            assert entry is not None
            body = (entry.target.encode() if entry.type == EntryType.SYMLINK
                    else tree.read_file(p))
            assert hashlib.sha1(body).digest() == digest


def test_real_busybox_details(alpine_keys: TrustedKeys) -> None:
    pkg = verify_apk(real(f"{ISO}/busybox-1.36.1-r15.apk"), alpine_keys, source="iso")
    assert [s.name for s in pkg.scripts] == [".post-install", ".post-upgrade", ".trigger"]
    trigger = pkg.script(".trigger")
    assert trigger is not None and trigger.mode == 0o755 and trigger.data.startswith(b"#!")
    assert pkg.info.license == "GPL-2.0-only"
    assert pkg.info.origin == "busybox"
    assert pkg.info.arch == "x86_64"
    assert pkg.info.builddate is not None and pkg.info.builddate > 1690000000
    assert pkg.info.triggers  # busybox watches directories with its .trigger
    assert "cmd:busybox=1.36.1-r15" in pkg.info.provides
    assert pkg.info.depends == ("so:libc.musl-x86_64.so.1",)
    with FileTree() as owner:
        tree, contents = load_package_data(pkg, owner.store)
        entry = tree.get("bin/busybox")
        assert entry is not None and entry.type == EntryType.FILE and entry.mode == 0o755
        assert contents.z_checksum("bin/busybox") == (
            "Q1" + __import__("base64").b64encode(
                hashlib.sha1(tree.read_file("bin/busybox")).digest()).decode())


def test_real_aarch64_baselayout(alpine_keys: TrustedKeys) -> None:
    path = real("apk-aarch64/alpine-baselayout-3.2.0-r23.apk")
    pkg = verify_apk(path, alpine_keys, source="go-apk testdata",
                     expected_checksum="Q1LLq2qDNrS/qRnhxQ3hsY/sHbQnc=")
    assert pkg.signer == KEY_AARCH64
    assert [s.name for s in pkg.scripts] == [".pre-install", ".pre-upgrade", ".post-upgrade",
                                             ".post-install"]
    assert pkg.info.depends == ("alpine-baselayout-data=3.2.0-r23", "/bin/sh",
                                "so:libc.musl-aarch64.so.1")
    assert pkg.info.license == "GPL-2.0-only"
    with FileTree() as owner:
        tree, contents = load_package_data(pkg, owner.store)
        root_crontab = tree.get("etc/crontabs/root")
        assert root_crontab is not None and root_crontab.mode == 0o600
        assert contents.sha1["etc/crontabs/root"].hex() == (
            "bdf9356a9516238c8b2468613517749098b17ef6")
        assert tree.get("root") is not None and tree.get("root").mode == 0o700  # type: ignore


def test_real_package_from_bytes_and_stream_match_path(alpine_keys: TrustedKeys) -> None:
    path = real(f"{ISO}/zlib-1.3.1-r0.apk")
    data = path.read_bytes()
    from_path = verify_apk(path, alpine_keys, source="iso")
    from_bytes = verify_apk(data, alpine_keys, source="iso")
    stream = io.BytesIO(b"prefix" + data)
    stream.seek(6)
    from_stream = verify_apk(stream, alpine_keys, source="iso")
    def summary(pkg: VerifiedPackage) -> tuple[object, ...]:
        return (pkg.info, pkg.checksum, pkg.scripts, pkg.signer, pkg.data_sha256,
                pkg.data_size, pkg.file_size)

    assert summary(from_path) == summary(from_bytes) == summary(from_stream)
    assert from_path.data_offset == from_bytes.data_offset
    assert from_stream.data_offset == from_path.data_offset + 6
    with FileTree() as a, FileTree() as b:
        loaded_a, _ = load_package_data(from_path, a.store)
        loaded_b, _ = load_package_data(from_stream, b.store)
        assert loaded_a.read_file("lib/libz.so.1.3.1") == loaded_b.read_file("lib/libz.so.1.3.1")
    assert not stream.closed
    with from_stream.open_data() as tar_stream:
        assert len(tar_stream.read()) % 10240 == 0


def test_real_package_wrong_index_checksum(alpine_keys: TrustedKeys) -> None:
    other = "Q1LLq2qDNrS/qRnhxQ3hsY/sHbQnc="
    with pytest.raises(VerificationError) as err:
        verify_apk(real(f"{ISO}/zlib-1.3.1-r0.apk"), alpine_keys, source="v3.19/main",
                   expected_checksum=other)
    assert str(err.value) == (
        "package zlib-1.3.1-r0 (v3.19/main): control checksum mismatch (index has "
        f"{other}, file has Q11mV5+Yq5WHkhWIJP27rBrg7izKg=)")


def test_real_package_untrusted_key() -> None:
    keys = TrustedKeys.from_files({KEY_AARCH64: real(f"apk-keys/{KEY_AARCH64}").read_bytes()})
    with pytest.raises(VerificationError) as err:
        verify_apk(real(f"{ISO}/zlib-1.3.1-r0.apk"), keys, source="iso")
    assert str(err.value) == f"package zlib-1.3.1-r0 (iso): signed by unknown key {KEY_X86_64}"


def test_real_package_truncated(alpine_keys: TrustedKeys) -> None:
    data = real(f"{ISO}/musl-1.2.4_git20230717-r4.apk").read_bytes()
    with pytest.raises(ArchiveError) as err:
        verify_apk(data[:-1000], alpine_keys, source="iso")
    assert str(err.value) == (
        "package musl-1.2.4_git20230717-r4 (iso): data gzip member is truncated")


# --- synthetic: round trip -----------------------------------------------------------


SPEC = PackageSpec(
    "hello", "1.0-r0", description="says hello", url="https://example.org",
    depends=("musl", "so:libc.musl-x86_64.so.1"), provides=("cmd:hello=1.0-r0",),
    install_if=("hello-base", "docs"), replaces=("old-hello",), triggers=("/usr/share/hello/*",),
    provider_priority=10, replaces_priority=2,
    files={"usr/bin/hello": FileSpec(b"#!/bin/sh\necho hello\n", mode=0o755),
           "usr/bin/hi": SymlinkSpec("hello"),
           "usr/bin/hey": HardlinkSpec("usr/bin/hello"),
           "etc/hello.conf": FileSpec(b"x=1\n", mode=0o640, gid=42)},
    scripts={".pre-install": b"#!/bin/sh\nexit 0\n", ".trigger": b"#!/bin/sh\n"},
)


def test_synthetic_package_round_trip() -> None:
    key = signing_key()
    built = build_package(SPEC, key)
    pkg = verify_apk(built.data, key.trusted(), source="repo", expected_checksum=built.checksum)
    info = pkg.info
    assert (info.pkgname, info.pkgver, info.pkgdesc, info.url) == (
        "hello", "1.0-r0", "says hello", "https://example.org")
    assert info.depends == ("musl", "so:libc.musl-x86_64.so.1")
    assert info.provides == ("cmd:hello=1.0-r0",)
    assert info.install_if == ("hello-base", "docs")
    assert info.replaces == ("old-hello",)
    assert info.triggers == ("/usr/share/hello/*",)
    assert (info.provider_priority, info.replaces_priority) == (10, 2)
    assert info.size == len(b"#!/bin/sh\necho hello\n") + len(b"x=1\n")
    assert info.datahash == hashlib.sha256(built.data_member).hexdigest()
    assert pkg.checksum == built.checksum == control_checksum(built.control_member)
    assert [(s.name, s.data, s.mode) for s in pkg.scripts] == [
        (".pre-install", b"#!/bin/sh\nexit 0\n", 0o755), (".trigger", b"#!/bin/sh\n", 0o755)]
    assert pkg.signer == key.name
    with FileTree() as owner:
        tree, contents = load_package_data(pkg, owner.store)
        assert contents.paths == ("etc", "etc/hello.conf", "usr", "usr/bin", "usr/bin/hello",
                                  "usr/bin/hey", "usr/bin/hi")
        assert set(contents.sha1) == {"etc/hello.conf", "usr/bin/hello", "usr/bin/hi"}
        assert contents.z_checksum("usr/bin/hi") == "Q1" + __import__("base64").b64encode(
            hashlib.sha1(b"hello").digest()).decode()
        hello, hey = tree.get("usr/bin/hello"), tree.get("usr/bin/hey")
        assert hello is not None and hey is not None
        assert hello.link_id == hey.link_id != 0
        conf = tree.get("etc/hello.conf")
        assert conf is not None and (conf.mode, conf.gid) == (0o640, 42)


def test_synthetic_rsa256_and_legacy_packages() -> None:
    key = signing_key()
    pkg = verify_apk(build_package(SPEC, key, algorithm="RSA256").data, key.trusted(),
                     source="repo")
    assert pkg.signature_algorithm == "RSA256"
    legacy = build_package(SPEC, key, legacy=True)
    pkg = verify_apk(legacy.data, key.trusted(), source="repo")
    assert pkg.info.datahash is None and pkg.signer == key.name


def test_legacy_package_header_tamper_is_bad_signature() -> None:
    key = signing_key()
    legacy = build_package(SPEC, key, legacy=True)
    offset = len(legacy.signature_member) + len(legacy.control_member) + 4  # gzip MTIME
    tampered = legacy.data[:offset] + b"\x01" + legacy.data[offset + 1:]
    with pytest.raises(VerificationError) as err:
        verify_apk(tampered, key.trusted(), source="repo")
    assert str(err.value) == f"package hello-1.0-r0 (repo): bad signature by {key.name}"


# --- synthetic: hostile --------------------------------------------------------------


def _expect(exc_type: type[Exception], message: str, data: bytes, **kwargs: object) -> None:
    key = signing_key()
    with pytest.raises(exc_type) as err:
        verify_apk(data, key.trusted(), source="repo", **kwargs)  # type: ignore[arg-type]
    assert str(err.value) == message


def test_control_checksum_mismatch() -> None:
    key = signing_key()
    built = build_package(SPEC, key)
    rebuilt = build_package(PackageSpec(**{**SPEC.__dict__, "builddate": 1700000001}), key)
    _expect(VerificationError,
            f"package hello-1.0-r0 (repo): control checksum mismatch (index has "
            f"{built.checksum}, file has {rebuilt.checksum})",
            rebuilt.data, expected_checksum=built.checksum)


def test_signature_failures() -> None:
    key, other = signing_key(), signing_key("other")
    _expect(VerificationError, f"package hello-1.0-r0 (repo): bad signature by {key.name}",
            build_package(SPEC, key, corrupt_signature=True).data)
    _expect(VerificationError, f"package hello-1.0-r0 (repo): signed by unknown key {other.name}",
            build_package(SPEC, other).data)
    _expect(VerificationError, f"package hello-1.0-r0 (repo): bad signature by {key.name}",
            build_package(SPEC, other, key_name=key.name).data)
    _expect(VerificationError, "package hello-1.0-r0 (repo): not signed",
            build_package(SPEC, None).data)


def test_unsigned_accepted_only_with_index_checksum() -> None:
    key, other = signing_key(), signing_key("other")
    for built in (build_package(SPEC, None), build_package(SPEC, other)):
        pkg = verify_apk(built.data, key.trusted(), source="repo", require_signature=False,
                         expected_checksum=built.checksum)
        assert pkg.signer is None
        _expect(VerificationError, "package hello-1.0-r0 (repo): neither signed by a trusted "
                "key nor checked against an index checksum", built.data,
                require_signature=False)
    _expect(VerificationError, f"package hello-1.0-r0 (repo): bad signature by {key.name}",
            build_package(SPEC, key, corrupt_signature=True).data, require_signature=False)


def test_datahash_mismatch() -> None:
    key = signing_key()
    built = build_package(SPEC, key, datahash="ab" * 32)
    real_hash = hashlib.sha256(built.data_member).hexdigest()
    _expect(VerificationError,
            f"package hello-1.0-r0 (repo): data hash mismatch (.PKGINFO datahash {'ab' * 32}, "
            f"data member sha256 {real_hash})", built.data)


def test_truncated_and_garbage_packages() -> None:
    data = build_package(SPEC, signing_key()).data
    sig, control, _ = split_gzip_members(data)
    _expect(ArchiveError, "package hello-1.0-r0 (repo): data gzip member is truncated",
            data[:-5])
    _expect(ArchiveError, "package hello-1.0-r0 (repo): data gzip member is missing",
            sig + control)
    _expect(ArchiveError, "package repo: control gzip member is truncated",
            sig + control[:20])
    _expect(ArchiveError, "package repo: control gzip member is missing (file ends early)", sig)
    _expect(ArchiveError, "package hello-1.0-r0 (repo): 3 unexpected bytes after the data "
            "member", data + b"abc")
    _expect(ArchiveError, "package x-1 (repo): signature gzip member is missing (file ends "
            "early)", b"", package="x-1")
    with pytest.raises(ArchiveError) as err:
        verify_apk(b"this is not a package at all", signing_key().trusted(), source="repo")
    assert re.fullmatch(r"package repo: signature gzip member is corrupt \(.*\)", str(err.value))


def test_expected_package_name_is_checked() -> None:
    _expect(VerificationError, "package hello-1.0-r0 (repo): expected hello-2.0-r0",
            build_package(SPEC, signing_key()).data, package="hello-2.0-r0")


def _load(built_data: bytes) -> None:
    key = signing_key()
    pkg = verify_apk(built_data, key.trusted(), source="repo")
    with FileTree() as owner:
        load_package_data(pkg, owner.store)


@pytest.mark.parametrize(("files", "message"), [
    ({"../evil": b"x"}, "package evil-1-r0 (repo): data: member '../evil' contains '..'"),
    ({"usr/../../evil": b"x"},
     "package evil-1-r0 (repo): data: member 'usr/../../evil' contains '..'"),
    ({"/etc/passwd": b"root::0:0::/:/bin/sh\n"},
     "package evil-1-r0 (repo): data: member '/etc/passwd' is absolute"),
    ({"usr/lib/x": SymlinkSpec("../../../../etc/shadow")},
     "package evil-1-r0 (repo): data: symlink 'usr/lib/x' -> '../../../../etc/shadow' escapes "
     "the root"),
    ({"lib": SymlinkSpec("/etc"), "lib/passwd": b"x"},
     "package evil-1-r0 (repo): data: member 'lib/passwd' passes through symlink 'lib' -> "
     "'/etc'"),
])
def test_hostile_data_members(files: dict[str, object], message: str) -> None:
    built = build_package(PackageSpec("evil", "1-r0", files=files), signing_key())  # type: ignore[arg-type]
    with pytest.raises(ArchiveError) as err:
        _load(built.data)
    assert str(err.value) == message


def test_pax_checksum_mismatch() -> None:
    good = hashlib.sha1(b"#!/bin/sh\necho hello\n").hexdigest()
    bad = "0" * 40
    built = build_package(SPEC, signing_key(),
                          data_tar_filter=lambda tar: tar.replace(good.encode(), bad.encode()))
    with pytest.raises(VerificationError) as err:
        _load(built.data)
    assert str(err.value) == (
        "package hello-1.0-r0 (repo): data: usr/bin/hello does not match its "
        f"APK-TOOLS.checksum.SHA1 record ({bad} recorded, {good} found)")


def test_file_changed_after_verification(tmp_path: Path) -> None:
    key = signing_key()
    path = tmp_path / "hello-1.0-r0.apk"
    path.write_bytes(build_package(SPEC, key).data)
    pkg: VerifiedPackage = verify_apk(path, key.trusted(), source="repo")
    data = bytearray(path.read_bytes())
    data[pkg.data_offset + 4] ^= 1  # gzip MTIME: inflates fine, hashes differently
    path.write_bytes(bytes(data))
    with FileTree() as owner, pytest.raises(VerificationError) as err:
        load_package_data(pkg, owner.store)
    assert str(err.value) == "package hello-1.0-r0 (repo): data changed after it was verified"


# --- .PKGINFO and checksum parsing ---------------------------------------------------


def test_parse_pkginfo_lists_comments_and_unknown_keys() -> None:
    info = parse_pkginfo(b"# Generated by abuild\npkgname = a\npkgver = 1-r0\npkgdesc =\n"
                         b"depend = b\ndepend = c>1 d\n# automatically detected:\n"
                         b"provides = so:liba.so.1=1\nfuture_key = whatever\n"
                         b"install_if = x y\nsize = 12\n", source="t")
    assert (info.pkgname, info.pkgver, info.pkgdesc, info.size) == ("a", "1-r0", "", 12)
    assert info.depends == ("b", "c>1", "d")
    assert info.provides == ("so:liba.so.1=1",)
    assert info.install_if == ("x", "y")
    assert ("future_key", "whatever") in info.fields


@pytest.mark.parametrize(("text", "message"), [
    (b"pkgver = 1\n", "t: .PKGINFO has no pkgname"),
    (b"pkgname = a\npkgver = 1\nsize = big\n", "t: .PKGINFO size = 'big' is not an integer"),
    (b"pkgname = a\npkgver=1\n", "t: .PKGINFO line 2 is not 'key = value': 'pkgver=1'"),
    (b"pkgname = a\npkgver = 1\ndatahash = XYZ\n",
     "t: .PKGINFO datahash 'XYZ' is not a sha256 hex digest"),
    (b"pkgname = \xff\n", "t: .PKGINFO is not UTF-8 (invalid start byte at byte 10)"),
])
def test_parse_pkginfo_errors(text: bytes, message: str) -> None:
    with pytest.raises(ArchiveError) as err:
        parse_pkginfo(text, source="t")
    assert str(err.value) == message


def test_parse_checksum_forms() -> None:
    digest = hashlib.sha1(b"x").digest()
    import base64
    assert parse_checksum("Q1" + base64.b64encode(digest).decode(), source="t") == (
        "sha1", digest)
    assert parse_checksum("X1" + digest.hex(), source="t") == ("sha1", digest)
    sha256 = hashlib.sha256(b"x").digest()
    assert parse_checksum("Q2" + base64.b64encode(sha256).decode(), source="t") == (
        "sha256", sha256)
    with pytest.raises(VerificationError) as err:
        parse_checksum("Z1abc", source="t")
    assert str(err.value) == "t: 'Z1abc' is not an APK checksum"
