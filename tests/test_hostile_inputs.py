"""Issue 11's root causes, one small hand-made input each, through the public parsers.

Every case must end in the ComposerError subclass of its stage, with one short line.
"""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import pytest

from composer.apk.datatar import load_package_data
from composer.apk.db import parse_installed, parse_scripts_tar, parse_triggers, parse_world
from composer.apk.depends import parse_dependency
from composer.apk.index import parse_apkindex
from composer.apk.package import parse_pkginfo, verify_apk
from composer.apk.signing import read_small_tar, verify_apkindex
from composer.apk.version import Version, compare_versions, is_valid_version
from composer.archive import load_tar
from composer.errors import ArchiveError, ComposerError, ProfileError, VerificationError
from composer.profile import load_profile
from composer.profile.yamlsafe import load_yaml
from composer.sources.releases import parse_latest_releases
from composer.sources.trust import load_release_key, verify_detached
from composer.tree import BlobStore, FileTree
from tests.helpers import hostile
from tests.helpers.apkrepo import (
    PackageSpec,
    build_index,
    build_package,
    cut_tar,
    gzip_member,
    signature_member,
    signing_key,
)
from tests.helpers.gpg import SigningKey, sign_detached

LONG = "9" * 4301
SUPERSCRIPT = "¹²³"


def one_line(exc: pytest.ExceptionInfo[ComposerError], limit: int = 400) -> str:
    text = str(exc.value)
    assert "\n" not in text and len(text) < limit, text
    return text


# --- A: unbounded integers -----------------------------------------------------------


@pytest.mark.parametrize("value", [LONG, SUPERSCRIPT, "+1", "1_0", " 1", "-1", "١٢"])
def test_index_numbers_are_ascii_digits_of_sane_length(value: str) -> None:
    with pytest.raises(ArchiveError) as err:
        parse_apkindex(f"P:a\nV:1\nS:{value}\n\n".encode(), source="idx")
    assert one_line(err).startswith("idx: record at line 1 (a): field 'S:' is not a number: ")


@pytest.mark.parametrize("value", [LONG, SUPERSCRIPT])
def test_pkginfo_and_installed_db_numbers(value: str) -> None:
    with pytest.raises(ArchiveError) as err:
        parse_pkginfo(f"pkgname = a\npkgver = 1\nsize = {value}\n".encode(), source="p")
    assert one_line(err).startswith("p: .PKGINFO size = ")
    with pytest.raises(ArchiveError) as err2:
        parse_installed(f"C:Q1x\nP:a\nV:1\nI:{value}\n\n".encode())
    assert one_line(err2).startswith("lib/apk/db/installed line 4: I: value ")
    with pytest.raises(ArchiveError):
        parse_installed(f"P:a\nV:1\nF:etc\nM:0:{value}:755\n\n".encode())


def test_versions_with_huge_numbers_still_compare() -> None:
    big = "1." + "9" * 5000
    assert compare_versions(big, "1.2") == 1
    assert compare_versions("1.2-r" + "7" * 5000, "1.2-r1") == 1
    assert compare_versions("1_p" + "3" * 5000, "1_p2") == 1
    assert Version(big) > Version("1.2") and is_valid_version(big)
    assert compare_versions("1" * 5000, "1" * 5000) == 0
    assert not is_valid_version("1." + SUPERSCRIPT)


def test_strict_dependency_with_huge_version_is_parsed_or_refused() -> None:
    dep = parse_dependency("a>=" + LONG, source="world", strict=True)
    assert dep.version == LONG
    with pytest.raises(ArchiveError) as err:
        parse_dependency("a>=1." + SUPERSCRIPT + "x" * 5000, source="world", strict=True)
    assert one_line(err).startswith("world: invalid dependency 'a>=1.¹²³xxxxx")


@pytest.mark.parametrize("value", [LONG, SUPERSCRIPT])
def test_release_size_must_be_a_sane_number(value: str) -> None:
    data = f"- {{flavor: f, version: '1', file: x, size: '{value}'}}\n".encode()
    with pytest.raises(ArchiveError) as err:
        parse_latest_releases(data, source="m")
    assert one_line(err).startswith("latest-releases.yaml at m: entry 0 (x): size ")


def test_release_versions_with_superscripts_are_refused() -> None:
    data = f"- {{flavor: f, version: '3.{SUPERSCRIPT}', file: x}}\n".encode()
    with pytest.raises(ArchiveError) as err:
        parse_latest_releases(data, source="m")
    assert one_line(err) == "latest-releases.yaml at m: entry 0 (x): version '3.¹²³' is not a " \
                            "release version"


def test_profile_with_a_4301_digit_number(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"name: x\nsource_date_epoch: {LONG}\n")
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert one_line(err) == f"{path}:2: number with more than 30 digits"


# --- B, C, D: tar headers ------------------------------------------------------------


@pytest.mark.parametrize(("data", "message"), [
    (hostile.SPARSE_MEMBER, "sparse members are not supported"),
    (hostile.PAX_SPARSE, "sparse members are not supported"),
    (hostile.PAX_DIGIT_RUN, "malformed pax record at byte 0"),
    (hostile.PAX_INF_MTIME, "mtime 'inf' is not a non-negative number"),
    (hostile.PAX_SIZE_OVERFLOW, "size '99999999999999999999"),
    (hostile.PAX_HUGE_SIZE, "declare more than the"),
    (hostile.BASE256_HUGE_SIZE, "declare more than the"),
    (hostile.header("g", b"g", 0) + hostile.end(), "global pax headers are not supported"),
    (hostile.header("v", b"V", 0) + hostile.end(), "unsupported tar member type b'V'"),
])
def test_small_tar_reader_refuses(data: bytes, message: str) -> None:
    with pytest.raises(ArchiveError) as err:
        read_small_tar(data, source="pkg", what="control member")
    text = one_line(err)
    assert text.startswith("pkg: control member: ") and message in text, text


@pytest.mark.parametrize("data", [hostile.SPARSE_MEMBER, hostile.PAX_SPARSE,
                                  hostile.PAX_DIGIT_RUN, hostile.PAX_HUGE_SIZE])
def test_scripts_tar_refuses(data: bytes) -> None:
    with pytest.raises(ArchiveError) as err:
        parse_scripts_tar(data)
    assert one_line(err).startswith("lib/apk/db/scripts.tar: ")


def test_tar_loader_refuses_a_one_tib_sparse_file_before_writing(tmp_path: Path) -> None:
    bomb = hostile.gzip_member(hostile.PAX_SPARSE)
    assert len(bomb) < 300
    with FileTree() as tree, pytest.raises(ArchiveError) as err:
        load_tar(io.BytesIO(bomb), tree, source="m.tar.gz")
    assert one_line(err) == ("m.tar.gz: sparse members are not supported "
                             "(tar header at byte 1024)")


@pytest.mark.parametrize("data", [hostile.TRUNCATED_GZIP, b"\x1f\x8b", b"\x1f\x8b\x08\x00\x00",
                                  b"BZh9", b"\xfd7zXZ\x00\x00"])
def test_truncated_compressed_streams(data: bytes) -> None:
    with FileTree() as tree, pytest.raises(ArchiveError) as err:
        load_tar(io.BytesIO(data), tree, source="m.tar.gz")
    assert one_line(err).startswith("m.tar.gz: not a readable tar archive (")


def test_tar_loader_compression_bomb_stops_at_the_ratio_limit() -> None:
    bomb = hostile.gzip_bomb(200 * 1024 * 1024)
    assert len(bomb) < 300_000
    store = BlobStore(spill_threshold=0)
    with FileTree(store=store) as tree, pytest.raises(ArchiveError) as err:
        load_tar(io.BytesIO(bomb), tree, source="m.tar.gz")
    assert one_line(err) == ("m.tar.gz: inflates to more than 100 times its compressed size; "
                             "refusing it as a compression bomb")


def test_three_byte_gzip_as_index_and_package() -> None:
    keys = signing_key().trusted()
    with pytest.raises(ArchiveError) as err:
        verify_apkindex(hostile.TRUNCATED_GZIP, keys, source="repo")
    assert one_line(err) == "repo: signature gzip member is truncated"
    with pytest.raises(ArchiveError) as err2:
        verify_apk(hostile.TRUNCATED_GZIP, keys, source="repo")
    assert one_line(err2) == "package repo: signature gzip member is truncated"


@pytest.mark.parametrize("member", [hostile.SPARSE_MEMBER, hostile.PAX_DIGIT_RUN])
def test_signature_member_is_read_strictly_before_any_check(member: bytes) -> None:
    key = signing_key()
    index = build_index(b"P:a\nV:1\n\n", key)
    hostile_index = hostile.gzip_member(member) + index[len(signature_member(key, b"", mtime=0)):]
    with pytest.raises(ArchiveError) as err:
        verify_apkindex(hostile_index, key.trusted(), source="repo")
    assert one_line(err).startswith("repo: first gzip member: ")
    apk = build_package(PackageSpec(name="a", version="1-r0", files={"x": b"x"}), key).data
    with pytest.raises(ArchiveError) as err2:
        verify_apk(hostile.gzip_member(member) + apk, key.trusted(), source="repo")
    assert one_line(err2).startswith("package repo: first gzip member: ")


# --- E: undecodable text ---------------------------------------------------------------


def test_world_and_triggers_with_invalid_utf8() -> None:
    with pytest.raises(ArchiveError) as err:
        parse_world(b"busybox\n\xff\n")
    assert one_line(err) == "etc/apk/world: not UTF-8 text (invalid start byte at byte 8)"
    with pytest.raises(ArchiveError) as err2:
        parse_triggers(b"Q1abc /usr/\xff\n")
    assert one_line(err2) == "lib/apk/db/triggers: not UTF-8 text (invalid start byte at byte 11)"


# --- F: YAML ---------------------------------------------------------------------------


def test_deep_yaml_nest() -> None:
    with pytest.raises(ProfileError) as err:
        load_yaml("a: " + "[" * 100_000, source="p.yaml")
    assert one_line(err) == "p.yaml:1: nested more than 64 levels deep"
    with pytest.raises(ArchiveError) as err2:
        parse_latest_releases(b"- " * 5000 + b"x\n", source="m")
    assert one_line(err2) == "latest-releases.yaml at m:1: nested more than 64 levels deep"


ALIAS_BOMB = "\n".join(
    ["a0: &a0 [x86_64, x86_64, x86_64, x86_64, x86_64, x86_64, x86_64, x86_64, x86_64]"]
    + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
       f"*a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    + ["name: x", "arch: *a8", ""])


def test_alias_bomb_on_an_enum_field(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(ALIAS_BOMB)
    tracemalloc.start()
    try:
        with pytest.raises(ProfileError) as err:
            load_profile(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert one_line(err) == f"{path}:6: expands to more than 100000 values " \
                            "(aliases repeated too often)"
    assert peak < 50 * 1024 * 1024


@pytest.mark.parametrize(("text", "message"), [
    ("name: x\nsource_date_epoch: !!int abc\n", ":2: cannot read 'abc' as int"),
    ("name: x\nrelease: !!timestamp\n", ":2: cannot read '' as timestamp"),
    ("name: x\nrelease: !!timestamp 2001-99-99\n", ":2: cannot read '2001-99-99' as timestamp"),
    ("a: &a [*a]\n", ":1: an alias refers to the collection that contains it"),
    ("name: x\noverlay: {}\narch: x86_64\noverlay: {}\n", ":4: duplicate key 'overlay' (first at line 2)"),
])
def test_yaml_conversions_and_duplicates(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert one_line(err) == f"{path}{message}"


@pytest.mark.parametrize("typed", [True, False])
def test_composing_stops_at_the_value_past_the_cap(typed: bool) -> None:
    """The syntax error at the end is never reached: the loader stops at value 101 of 100,
    so a large file costs what its first values cost (issue 19)."""
    text = "- a\n" * 150 + "- [unclosed\n"
    with pytest.raises(ProfileError) as err:
        load_yaml(text, source="s", typed=typed, max_nodes=100)
    assert one_line(err) == "s:100: more than 100 values"
    assert load_yaml("- a\n" * 99, source="s", typed=typed, max_nodes=100) == ["a"] * 99


def test_a_release_list_is_capped_in_bytes_and_values() -> None:
    with pytest.raises(ArchiveError) as err:
        parse_latest_releases(b"#" * (1 << 20) + b"\n", source="m")
    assert one_line(err) == "latest-releases.yaml at m: 1048577 bytes, more than the 1048576 " \
                            "allowed"
    with pytest.raises(ArchiveError) as err2:
        parse_latest_releases(b"- {}\n" * 10_001, source="m")
    assert one_line(err2) == "latest-releases.yaml at m:10000: more than 10000 values"


def test_implicit_dates_stay_strings() -> None:
    assert load_yaml("d: 2024-09-06\ne: 2001-99-99\n", source="s") == {
        "d": "2024-09-06", "e": "2001-99-99"}


def test_error_message_does_not_print_a_long_value(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"name: x\nbranch: '{'7' * 3500}'\n")
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert "(3500 characters)" in one_line(err)


# --- G: pysequoia errors ---------------------------------------------------------------


def test_unknown_openpgp_hash_id(tmp_path: Path, signing_key: SigningKey) -> None:
    data = tmp_path / "d"
    data.write_bytes(b"hello")
    key = load_release_key(signing_key.public_armored, fingerprint=signing_key.fingerprint,
                           source="k")
    bad = hostile.unknown_hash_signature(sign_detached(signing_key, b"hello"))
    with pytest.raises(VerificationError) as err:
        verify_detached(data, bad, key, what="d")
    assert one_line(err) == "d: signature is not a valid OpenPGP signature: Unknown hash " \
                            "algorithm: 99"


def test_key_with_a_damaged_self_signature(signing_key: SigningKey) -> None:
    broken = hostile.broken_binding_key(signing_key.public_armored)
    with pytest.raises(VerificationError) as err:
        load_release_key(broken, fingerprint=signing_key.fingerprint, source="k")
    assert one_line(err).startswith("release key k: key ") and "is unusable: No binding " \
        "signature" in str(err.value)


# --- H: extends ----------------------------------------------------------------------


@pytest.mark.parametrize(("target", "message"), [
    ("a" * 300, "is too long for a file name"),
    ("/dev/zero", "/dev/zero: not a regular file"),
    ("/proc", "/proc: not a regular file"),
])
def test_extends_is_checked_before_it_is_read(tmp_path: Path, target: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"name: x\nextends: {target}\n")
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert message in one_line(err)


def test_oversized_profile(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: x\n" + "#" * (1024 * 1024) + "\n")
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert one_line(err) == f"{path}: larger than 1048576 bytes; not a profile"


# --- size bombs ----------------------------------------------------------------------


def _index_with_member(index_member: bytes, key_label: str | None) -> bytes:
    key = signing_key(key_label) if key_label else signing_key()
    return signature_member(key, index_member, mtime=0) + index_member


def test_unsigned_index_bomb_is_never_inflated_into_memory() -> None:
    bomb_member = hostile.deflate_zeros(300 * 1024 * 1024)
    data = _index_with_member(bomb_member, "stranger")
    tracemalloc.start()
    try:
        with pytest.raises(VerificationError) as err:
            verify_apkindex(data, signing_key().trusted(), source="repo")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert one_line(err) == "repo: signed by unknown key composer-test-stranger.rsa.pub"
    assert peak < 4 * len(data) + 16 * 1024 * 1024


def test_signed_index_bomb_stops_at_the_cap() -> None:
    data = _index_with_member(hostile.deflate_zeros(8 * 1024 * 1024), None)
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveError) as err:
            verify_apkindex(data, signing_key().trusted(), source="repo",
                            max_index_size=1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert one_line(err) == "repo: index gzip member inflates to more than 1048576 bytes"
    assert peak < 16 * 1024 * 1024


def test_control_member_bomb_before_the_signature() -> None:
    key = signing_key()
    control = gzip_member(cut_tar([(".PKGINFO", b"pkgname = a\n" + bytes(8 << 20), 0o644)],
                                  mtime=0, fmt=0, owner_names=""))
    data = signature_member(key, control) + control + gzip_member(b"")
    with pytest.raises(ArchiveError) as err:
        verify_apk(data, key.trusted(), source="repo")
    assert one_line(err) == "package repo: control gzip member inflates to more than 4194304 bytes"


def test_package_data_is_bounded_by_the_signed_installed_size() -> None:
    key = signing_key()
    built = build_package(PackageSpec(name="a", version="1-r0", size=10,
                                      files={"big": bytes(3 * 1024 * 1024)}), key)
    pkg = verify_apk(built.data, key.trusted(), source="repo")
    store = BlobStore()
    try:
        with pytest.raises(ArchiveError) as err:
            load_package_data(pkg, store)
    finally:
        store.close()
    assert one_line(err) == ("package a-1-r0 (repo): data: member 'big' declares 3145728 bytes, "
                             "more than the 1048596-byte limit (tar header at byte 1024)")


def test_legacy_package_data_is_inflated_only_up_to_the_installed_size_bound() -> None:
    key = signing_key()
    built = build_package(PackageSpec(name="a", version="1-r0", size=10, files={"x": b"x"}), key,
                          legacy=True, data_tar_filter=lambda tar: tar + bytes(20 * 1024 * 1024))
    with pytest.raises(ArchiveError) as err:
        verify_apk(built.data, key.trusted(), source="repo")
    assert one_line(err) == ("package a-1-r0 (repo): data gzip member inflates to more than "
                             "18874408 bytes, beyond what the installed size in .PKGINFO allows")
