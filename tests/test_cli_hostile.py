"""A hostile mirror on 127.0.0.1, before any signature is checked: one line, an exit code, no mess.

Each case serves one artifact from issue 11 over real HTTP and runs the CLI in
its own process, which reports its peak memory; the build must refuse it with
the exit code README documents, stay under 200 MB and leave nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import write_profile
from tests.helpers import hostile
from tests.helpers.apkrepo import (
    PackageSpec,
    build_index,
    build_package,
    cut_tar,
    format_index_record,
    gzip_member,
    signature_member,
)
from tests.helpers.apkrepo import signing_key as apk_signing_key
from tests.helpers.gpg import SigningKey, sign_detached
from tests.helpers.httpserver import serve_directory
from tests.helpers.measure import Measured, run_measured
from tests.helpers.mirror import MirrorInfo, build_mirror, minirootfs_without_world
from tests.test_cli_errors import assert_nothing_written, error_line

MAX_RSS_KIB = 200 * 1024


@pytest.fixture
def mirror(tmp_path: Path, signing_key: SigningKey) -> MirrorInfo:
    return build_mirror(tmp_path / "mirror", key=signing_key, tarball=minirootfs_without_world())


def build_against(tmp_path: Path, profile: Path) -> tuple[int, str, Path, Path]:
    out, cache = tmp_path / "out", tmp_path / "cache"
    run = run_measured("build", profile, "--output-dir", out, "--cache-dir", cache,
                       "--retries", "1", "--retry-delay", "0.01")
    assert run.rss_kib < MAX_RSS_KIB, f"peak memory {run.rss_kib} KiB"
    return run.code, run.stderr, out, cache


# --- release metadata, key and signature -------------------------------------------------


DEEP = b"- " * 5000 + b"x\n"
ALIAS_BOMB = b"\n".join(
    [b"- &a0 {flavor: x, version: '1', file: x, arch: x86_64}"]
    + [b"- &a%d [%s]" % (i, b", ".join([b"*a%d" % (i - 1)] * 9)) for i in range(1, 9)]) + b"\n"


@pytest.mark.parametrize(("case", "expected"), [
    ("deep", ":1: nested more than 64 levels deep"),
    ("alias-bomb", ":5: expands to more than 10000 values (aliases repeated too often)"),
    ("long-size", ": entry 1 (alpine-minirootfs-3.20.3-x86_64.tar.gz): size '999999999"),
    ("superscript-size", ": entry 1 (alpine-minirootfs-3.20.3-x86_64.tar.gz): size '¹²³' is "
                         "not a number"),
])
def test_hostile_latest_releases(tmp_path: Path, mirror: MirrorInfo, signing_key: SigningKey,
                                 case: str, expected: str) -> None:
    yaml_path = mirror.release_dir / "latest-releases.yaml"
    text = yaml_path.read_bytes()
    if case == "deep":
        text = DEEP
    elif case == "alias-bomb":
        text = ALIAS_BOMB
    else:
        value = "9" * 4301 if case == "long-size" else "¹²³"
        text = text.replace(f"size: {mirror.size}\n".encode(), f"size: {value}\n".encode())
    yaml_path.write_bytes(text)
    with serve_directory(mirror.root) as server:
        profile = write_profile(tmp_path / "p", mirror_url=server.url, key=signing_key)
        code, err, out, cache = build_against(tmp_path, profile)
    assert code == 5, err
    line = error_line(err)
    assert line.startswith(f"latest-releases.yaml at {server.url}/v3.20/releases/x86_64/"
                           "latest-releases.yaml") and expected in line, line
    assert len(line) < 300
    assert_nothing_written(out, cache, text)


def test_signature_with_an_unknown_hash_algorithm(tmp_path: Path, mirror: MirrorInfo,
                                                  signing_key: SigningKey) -> None:
    bad = hostile.unknown_hash_signature(sign_detached(signing_key, mirror.tarball))
    (mirror.release_dir / f"{mirror.filename}.asc").write_bytes(bad)
    with serve_directory(mirror.root) as server:
        profile = write_profile(tmp_path / "p", mirror_url=server.url, key=signing_key)
        code, err, out, cache = build_against(tmp_path, profile)
    assert code == 4, err
    assert error_line(err).endswith("signature is not a valid OpenPGP signature: Unknown hash "
                                    "algorithm: 99")
    assert_nothing_written(out, cache, mirror.tarball)


def test_release_key_with_a_damaged_binding_signature(tmp_path: Path, mirror: MirrorInfo,
                                                      signing_key: SigningKey) -> None:
    with serve_directory(mirror.root) as server:
        profile = write_profile(tmp_path / "p", mirror_url=server.url, key=signing_key)
        (profile.parent / "release-key.asc").write_bytes(
            hostile.broken_binding_key(signing_key.public_armored))
        code, err, out, cache = build_against(tmp_path, profile)
    assert code == 4, err
    assert "is unusable: No binding signature" in error_line(err)
    assert_nothing_written(out, cache, mirror.tarball)


# --- package repository: index and packages ----------------------------------------------

SPEC = PackageSpec(name="hello", version="2.1-r3", files={"usr/bin/hello": b"#!/bin/sh\n"})


def _repository(root: Path, *, index: bytes | None = None, apk: bytes | None = None) -> Path:
    """A repository with one package; ``index`` or ``apk`` replace the real bytes.

    A replaced ``.apk`` keeps the real control checksum in the index, with its own size,
    so that the download itself succeeds and the package parser meets the bytes.
    """
    key = apk_signing_key()
    built = build_package(SPEC, key)
    body = apk if apk is not None else built.data
    arch_dir = root / "x86_64"
    arch_dir.mkdir(parents=True)
    (arch_dir / SPEC.file_name).write_bytes(body)
    text = (format_index_record(built, file_size=len(body)) + "\n").encode()
    (arch_dir / "APKINDEX.tar.gz").write_bytes(index if index is not None
                                               else build_index(text, key))
    return root


def _repo_profile(tmp_path: Path, mirror_url: str, repo_url: str, key: SigningKey) -> Path:
    folder = tmp_path / "p"
    folder.mkdir(parents=True, exist_ok=True)
    apk_key = apk_signing_key()
    (folder / apk_key.name).write_bytes(apk_key.public_pem)
    return write_profile(folder, mirror_url=mirror_url, key=key, name="pk", packages=["hello"],
                         repositories=[repo_url],
                         keys=[{"file": apk_key.name, "sha256": apk_key.public_sha256}],
                         outputs=[{"format": "tar", "compression": "none"}])


def _signed_by_stranger(member: bytes) -> bytes:
    return signature_member(apk_signing_key("stranger"), member, mtime=0) + member


def _hostile_index(case: str) -> bytes:
    rest = build_index(b"P:hello\nV:2.1-r3\n\n", apk_signing_key())
    index_member = rest[len(signature_member(apk_signing_key(), b"", mtime=0)):]
    if case == "sparse-signature":
        return gzip_member(hostile.SPARSE_MEMBER) + index_member
    if case == "pax-digit-run":
        return gzip_member(hostile.PAX_DIGIT_RUN) + index_member
    if case == "pax-sparse":
        return gzip_member(hostile.PAX_SPARSE) + index_member
    if case == "truncated-gzip":
        return hostile.TRUNCATED_GZIP
    assert case == "bomb"
    return _signed_by_stranger(hostile.deflate_zeros(1024 * 1024 * 1024))


@pytest.mark.parametrize(("case", "code", "expected"), [
    ("sparse-signature", 5, "first gzip member: not a readable tar archive (sparse members are "
                            "not supported)"),
    ("pax-sparse", 5, "first gzip member: sparse members are not supported (tar header at "
                      "byte 1024)"),
    ("pax-digit-run", 5, "first gzip member: pax header at byte 0: malformed pax record at "
                         "byte 0"),
    ("truncated-gzip", 5, "signature gzip member is truncated"),
    ("bomb", 4, "signed by unknown key composer-test-stranger.rsa.pub"),
])
def test_hostile_index(tmp_path: Path, mirror: MirrorInfo, signing_key: SigningKey,
                       case: str, code: int, expected: str) -> None:
    index = _hostile_index(case)
    _repository(mirror.root / "repo", index=index)
    with serve_directory(mirror.root) as server:
        profile = _repo_profile(tmp_path, server.url, server.url + "/repo", signing_key)
        got, err, out, cache = build_against(tmp_path, profile)
    assert got == code, err
    line = error_line(err)
    assert line.startswith(f"{server.url}/repo/x86_64/APKINDEX.tar.gz: ") and expected in line, line
    assert_nothing_written(out, cache, index)


def _hostile_apk(case: str) -> bytes:
    real = build_package(SPEC, apk_signing_key())
    if case == "sparse-signature":
        return gzip_member(hostile.SPARSE_MEMBER) + real.control_member + real.data_member
    if case == "pax-digit-run":
        return gzip_member(hostile.PAX_DIGIT_RUN) + real.control_member + real.data_member
    assert case == "control-bomb"
    control = gzip_member(cut_tar([(".PKGINFO", real.pkginfo + bytes(64 << 20), 0o644)],
                                  mtime=0, fmt=0, owner_names=""))
    return real.signature_member + control + real.data_member


@pytest.mark.parametrize(("case", "expected"), [
    ("sparse-signature", "first gzip member: not a readable tar archive (sparse members are "
                         "not supported)"),
    ("pax-digit-run", "first gzip member: pax header at byte 0: malformed pax record at byte 0"),
    ("control-bomb", "control gzip member inflates to more than 4194304 bytes"),
])
def test_hostile_package(tmp_path: Path, mirror: MirrorInfo, signing_key: SigningKey,
                         case: str, expected: str) -> None:
    apk = _hostile_apk(case)
    _repository(mirror.root / "repo", apk=apk)
    with serve_directory(mirror.root) as server:
        profile = _repo_profile(tmp_path, server.url, server.url + "/repo", signing_key)
        code, err, out, cache = build_against(tmp_path, profile)
    assert code == 5, err
    line = error_line(err)
    assert line.startswith("package hello-2.1-r3 (") and expected in line, line
    assert_nothing_written(out, cache, apk)


# --- issue 19: what is read before any trust, and signed indexes of any size ------------

BOUND_KIB = 300 * 1024


def measured_build(tmp_path: Path, profile: Path) -> tuple[Measured, Path, Path]:
    """A build in its own process that must stay under 300 MB and 30 s."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    run = run_measured("build", profile, "--output-dir", out, "--cache-dir", cache,
                       "--retries", "1", "--retry-delay", "0.01")
    assert run.rss_kib < BOUND_KIB, f"peak memory {run.rss_kib} KiB"
    assert run.wall_seconds < 30, f"took {run.wall_seconds:.1f} s"
    return run, out, cache


@pytest.mark.parametrize(("path", "headers", "expected"), [
    ("latest-releases.yaml", {"Content-Length": "²"}, "malformed Content-Length header '²'"),
    ("latest-releases.yaml", {"Content-Length": "9" * 5000},
     "malformed Content-Length header '" + "9" * 60 + "…' (5000 characters)"),
    ("TARBALL", {"Content-Range": "bytes 0-1/" + "9" * 5000},
     "server answered the resume request with the wrong range after 2 attempts"),
])
def test_http_headers_are_numbers_or_refused(tmp_path: Path, mirror: MirrorInfo,
                                             signing_key: SigningKey, path: str,
                                             headers: dict[str, str], expected: str) -> None:
    """A header the fetcher reads passes numbers.py's rules or ends the download (exit 3)."""
    relative = f"v3.20/releases/x86_64/{mirror.filename if path == 'TARBALL' else path}"
    with serve_directory(mirror.root) as server:
        if path == "TARBALL":
            server.faults.truncate(relative, times=1)
        server.faults.headers(relative, headers)
        profile = write_profile(tmp_path / "p", mirror_url=server.url, key=signing_key)
        run, out, cache = measured_build(tmp_path, profile)
    assert run.code == 3, run.stderr
    line = error_line(run.stderr)
    assert line.endswith(f": {server.url}/{relative}: {expected}"), line
    assert_nothing_written(out, cache, mirror.tarball)


@pytest.mark.parametrize(("size", "code", "expected"), [
    (8 << 20, 3, "larger than the 1048576-byte limit"),
    (1 << 20, 5, ":10000: more than 10000 values"),
])
def test_a_huge_release_list_costs_its_cap(tmp_path: Path, mirror: MirrorInfo,
                                           signing_key: SigningKey, size: int, code: int,
                                           expected: str) -> None:
    """The unsigned release list is capped in bytes (1 MiB) and in values (10,000), and the
    loader stops at the value past the cap instead of composing the rest first."""
    text = (b"- a\n" * (size // 4))[:size]
    (mirror.release_dir / "latest-releases.yaml").write_bytes(text)
    with serve_directory(mirror.root) as server:
        profile = write_profile(tmp_path / "p", mirror_url=server.url, key=signing_key)
        run, out, cache = measured_build(tmp_path, profile)
    assert run.code == code, run.stderr
    assert error_line(run.stderr).endswith(expected), run.stderr
    assert run.cpu_seconds < 5, f"{run.cpu_seconds:.1f} s of CPU"
    assert_nothing_written(out, cache, text)


@pytest.mark.parametrize(("head", "body"), [
    (b"packages:\n", b"- a\n"), (b"packages: [", b"a, "), (b"overlay:\n", b"  k%d: v\n")])
def test_a_huge_profile_stops_at_its_value_cap(tmp_path: Path, head: bytes, body: bytes) -> None:
    """1 MiB of profile: refused at the 100,001st value, in well under a second of CPU."""
    text = body if b"%d" not in body else b"".join(body % i for i in range(200_000))
    profile = tmp_path / "p.yaml"
    profile.write_bytes((head + text * ((1 << 20) // len(text) + 1))[:(1 << 20) - 1])
    out = tmp_path / "out"
    run = run_measured("build", profile, "--output-dir", out, "--cache-dir", tmp_path / "c")
    assert run.code == 2, run.stderr
    assert error_line(run.stderr).endswith(": more than 100000 values"), run.stderr
    assert run.cpu_seconds < 3, f"{run.cpu_seconds:.1f} s of CPU"
    assert run.rss_kib < BOUND_KIB
    assert not out.exists()


def _million_records() -> bytes:
    return build_index(b"".join(b"P:a%d\nV:1\n\n" % i for i in range(1_000_000)),
                       apk_signing_key())


def _one_gib_member() -> bytes:
    member = hostile.deflate_zeros(1 << 30)
    return signature_member(apk_signing_key(), member, mtime=0) + member


@pytest.mark.parametrize(("make", "expected", "max_kib"), [
    (_million_records, "1000000 records, more than the 200000 an index may hold", 120 * 1024),
    (_one_gib_member, "index gzip member inflates to more than 134217728 bytes", 100 * 1024),
], ids=["million-records", "one-gib-member"])
def test_a_signed_index_costs_its_bounds(tmp_path: Path, mirror: MirrorInfo,
                                         signing_key: SigningKey, make: Callable[[], bytes],
                                         expected: str, max_kib: int) -> None:
    """Correctly signed: 10^6 records are refused after one pass over the bytes, and 1 GiB
    of zeros as the index member is inflated streaming up to the 128 MiB cap, never held
    (README's figures are measured here); exit 5, nothing cached."""
    index = make()
    _repository(mirror.root / "repo", index=index)
    with serve_directory(mirror.root) as server:
        profile = _repo_profile(tmp_path, server.url, server.url + "/repo", signing_key)
        run, out, cache = measured_build(tmp_path, profile)
    assert run.code == 5, run.stderr
    assert error_line(run.stderr) == f"{server.url}/repo/x86_64/APKINDEX.tar.gz: {expected}"
    assert run.rss_kib < max_kib, f"peak memory {run.rss_kib} KiB"
    assert run.cpu_seconds < 10, f"{run.cpu_seconds:.1f} s of CPU"
    assert_nothing_written(out, cache, index)
