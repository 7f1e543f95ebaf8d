"""Lock → build → vendor → the mirror moves on → offline rebuild from the vendored folder,
through the real CLI against a signed mirror served over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from composer.lockfile import LOCK_SUFFIX, parse_lock
from tests.conftest import run_cli, write_profile
from tests.helpers.apkrepo import PackageSpec, build_repository
from tests.helpers.apkrepo import signing_key as apk_signing_key
from tests.helpers.gpg import SigningKey
from tests.helpers.httpserver import Server, serve_directory
from tests.helpers.mirror import MirrorInfo, build_mirror, minirootfs_without_world
from tests.test_cli_packages import HELLO

FAST = ("--retries", "0", "--retry-delay", "0")
TOOLS = [PackageSpec(name="tools", version="1.0-r0", files={"usr/bin/tool": b"#!/bin/sh\n"})]
HELLO_APK = "v3.20/main/x86_64/hello-2.1-r3.apk"


@pytest.fixture
def live(tmp_path: Path, signing_key: SigningKey) -> MirrorInfo:
    """Alpine's layout in one folder: the signed release and v3.20's main and community."""
    mirror = build_mirror(tmp_path / "mirror", key=signing_key, tarball=minirootfs_without_world())
    build_repository(mirror.root / "v3.20" / "main", HELLO, apk_signing_key())
    build_repository(mirror.root / "v3.20" / "community", TOOLS, apk_signing_key())
    return mirror


def locked_profile(folder: Path, server: Server, key: SigningKey, **fields: object) -> Path:
    apk_key = apk_signing_key()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / apk_key.name).write_bytes(apk_key.public_pem)
    (folder / "files").mkdir(exist_ok=True)
    (folder / "files" / "motd").write_text("locked\n")
    fields.setdefault("outputs", [{"format": "tar", "compression": "gzip"}, {"format": "oci"}])
    return write_profile(folder, mirror_url=server.url, key=key, name="pinned",
                         packages=["hello", "tools"],
                         keys=[{"file": apk_key.name, "sha256": apk_key.public_sha256}],
                         overlay={"tree": "files"}, **fields)


def artifacts(folder: Path) -> dict[str, bytes]:
    """Every file SHA256SUMS lists, with its bytes, plus SHA256SUMS itself."""
    sums = (folder / "SHA256SUMS").read_text()
    names = [line.split("  ", 1)[1] for line in sums.splitlines()]
    return {"SHA256SUMS": sums.encode(), **{n: (folder / n).read_bytes() for n in names}}


def test_lock_vendor_and_offline_rebuild(tmp_path: Path, live: MirrorInfo,
                                         signing_key: SigningKey) -> None:
    with serve_directory(live.root) as server:
        profile = locked_profile(tmp_path / "p", server, signing_key)
        lock_file = profile.with_name("pinned" + LOCK_SUFFIX)
        cache = tmp_path / "cache"
        made = run_cli("lock", profile, "--cache-dir", cache, *FAST)
        assert made.returncode == 0, made.stderr
        assert f"locked  {lock_file}" in made.stdout.splitlines()
        text = lock_file.read_text()
        lock = parse_lock(text.encode(), what="lock")
        (arch,) = lock.arches
        assert [(p.name, p.version, p.repository) for p in arch.packages if p.sha256] == [
            ("musl", "1.2.4-r0", "v3.20/main"), ("libhello", "1.0-r0", "v3.20/main"),
            ("hello", "2.1-r3", "v3.20/main"), ("tools", "1.0-r0", "v3.20/community")]
        assert arch.minirootfs is not None
        assert arch.minirootfs.path == live.relpath(live.filename)
        assert arch.minirootfs.signed_by == signing_key.fingerprint
        assert [r.path for r in arch.repositories] == ["v3.20/main/x86_64/APKINDEX.tar.gz",
                                                       "v3.20/community/x86_64/APKINDEX.tar.gz"]
        assert server.url not in text  # paths are relative to the mirror
        package_lines = [line for line in text.splitlines() if '"checksum": "Q1' in line]
        assert len(package_lines) == 4 and all(line.strip().startswith("{") for line in package_lines)
        assert lock.profile.files == {"files/motd": "sha256:" + __import__("hashlib").sha256(
            b"locked\n").hexdigest()}
        again = run_cli("lock", profile, "--cache-dir", cache, *FAST)
        assert again.returncode == 0 and f"up to date  {lock_file}" in again.stdout
        assert lock_file.read_text() == text

        built = run_cli("build", profile, "--output-dir", tmp_path / "out", "--cache-dir", cache,
                        *FAST)
        assert built.returncode == 0, built.stderr
        first = artifacts(tmp_path / "out" / "pinned")
        recorded = (tmp_path / "out" / "pinned" / "lock.json").read_text()
        assert recorded == text
        manifest = json.loads((tmp_path / "out" / "pinned" / "manifest.json").read_text())
        assert manifest["lock"]["locked"] is True

        vendored = tmp_path / "vendored"
        copied = run_cli("vendor", profile, vendored, "--cache-dir", cache, *FAST)
        assert copied.returncode == 0, copied.stderr
        assert (vendored / HELLO_APK).read_bytes() == (live.root / HELLO_APK).read_bytes()
        for name in ("v3.20/main/x86_64/APKINDEX.tar.gz", live.relpath(live.filename),
                     live.relpath(live.filename + ".asc")):
            assert (vendored / name).read_bytes() == (live.root / name).read_bytes(), name
        assert (vendored / live.relpath(live.filename + ".sha256")).read_text() == \
            f"{live.sha256}  {live.filename}\n"
        releases = yaml.safe_load((vendored / live.relpath("latest-releases.yaml")).read_text())
        assert [(r["file"], r["sha256"]) for r in releases] == [(live.filename, live.sha256)]

        # Alpine removes the old build of a package once a new one is published.
        (live.root / HELLO_APK).unlink()
        gone = run_cli("build", profile, "--output-dir", tmp_path / "out-live",
                       "--cache-dir", tmp_path / "cache-live", *FAST)
        assert gone.returncode == 3, gone.stderr
        assert "package hello-2.1-r3 is locked, but" in gone.stderr
        assert "alpine-composer vendor" in gone.stderr
        assert len(gone.stderr.strip().splitlines()) == 1 or "error:" in gone.stderr.splitlines()[-1]

    offline = run_cli("build", profile, "--mirror", vendored, "--offline",
                      "--output-dir", tmp_path / "out-offline", "--cache-dir", tmp_path / "empty",
                      *FAST)
    assert offline.returncode == 0, offline.stderr
    assert artifacts(tmp_path / "out-offline" / "pinned") == first

    again = run_cli("vendor", profile, vendored, "--cache-dir", tmp_path / "empty", "--offline",
                    "--mirror", vendored)
    assert again.returncode == 0, again.stderr
    assert "vendored 0 new" in again.stdout


def test_vendor_is_atomic_and_only_adds(tmp_path: Path, live: MirrorInfo,
                                        signing_key: SigningKey) -> None:
    with serve_directory(live.root) as server:
        profile = locked_profile(tmp_path / "p", server, signing_key)
        cache = tmp_path / "cache"
        assert run_cli("lock", profile, "--cache-dir", cache, *FAST).returncode == 0
        (live.root / HELLO_APK).unlink()
        failed = run_cli("vendor", profile, tmp_path / "v", "--cache-dir", tmp_path / "c2", *FAST)
        assert failed.returncode == 3, failed.stderr
        assert "package hello-2.1-r3" in failed.stderr
        assert not (tmp_path / "v").exists()
        assert [p.name for p in tmp_path.iterdir() if "vendor" in p.name] == []
        done = run_cli("vendor", profile, tmp_path / "v", "--cache-dir", cache, *FAST)
        assert done.returncode == 0, done.stderr


def test_tampered_inputs_are_refused(tmp_path: Path, live: MirrorInfo,
                                     signing_key: SigningKey) -> None:
    with serve_directory(live.root) as server:
        profile = locked_profile(tmp_path / "p", server, signing_key)
        cache = tmp_path / "cache"
        assert run_cli("lock", profile, "--cache-dir", cache, *FAST).returncode == 0
        vendored = tmp_path / "v"
        assert run_cli("vendor", profile, vendored, "--cache-dir", cache, *FAST).returncode == 0
    lock_file = profile.with_name("pinned" + LOCK_SUFFIX)

    def offline_build(name: str, mirror: Path = vendored) -> tuple[int, str]:
        result = run_cli("build", profile, "--mirror", mirror, "--offline", "--output-dir",
                         tmp_path / f"out-{name}", "--cache-dir", tmp_path / f"cache-{name}", *FAST)
        return result.returncode, result.stderr

    def tampered(rel: str) -> Path:
        copy = tmp_path / f"v-{rel.replace('/', '_')}"
        shutil.copytree(vendored, copy)
        data = bytearray((copy / rel).read_bytes())
        data[len(data) // 2] ^= 0x01
        (copy / rel).write_bytes(bytes(data))
        return copy

    code, err = offline_build("apk", tampered(HELLO_APK))
    assert code == 4 and "package hello-2.1-r3" in err and "sha256 mismatch" in err
    code, err = offline_build("index", tampered("v3.20/main/x86_64/APKINDEX.tar.gz"))
    assert code == 5, err  # the signature fails, and the damage is named
    assert "v3.20/main/x86_64/APKINDEX.tar.gz: index gzip member is corrupt" in err
    code, err = offline_build("mini", tampered(live.relpath(live.filename)))
    assert code == 4 and f"minirootfs {live.filename}" in err and "sha256 mismatch" in err

    text = lock_file.read_text()
    lock_file.write_text(text.replace('"version": "2.1-r3"', '"version": "2.1-r4"'))
    code, err = offline_build("lock")
    assert code == 4
    assert f"{lock_file}: its content does not match its digest" in err
    lock_file.write_text(text)

    (profile.parent / "files" / "motd").write_text("edited\n")
    data = yaml.safe_load(profile.read_text())
    data["packages"] = ["hello"]
    profile.write_text(yaml.safe_dump(data))
    code, err = offline_build("profile")
    assert code == 4
    assert "changed since" in err and "packages, overlay file files/motd (changed)" in err
    assert "alpine-composer lock --update" in err


def test_lock_update_names_the_upgrade_and_check_fails_when_stale(
        tmp_path: Path, live: MirrorInfo, signing_key: SigningKey) -> None:
    with serve_directory(live.root) as server:
        profile = locked_profile(tmp_path / "p", server, signing_key)
        cache = tmp_path / "cache"
        assert run_cli("lock", profile, "--cache-dir", cache, *FAST).returncode == 0
        fresh = run_cli("lock", "--check", profile, "--cache-dir", cache, *FAST)
        assert fresh.returncode == 0, fresh.stderr
        newer = [s if s.name != "hello" else PackageSpec(
            name="hello", version="2.1-r4", depends=s.depends, files=s.files) for s in HELLO]
        shutil.rmtree(live.root / "v3.20" / "main")
        build_repository(live.root / "v3.20" / "main", newer, apk_signing_key())
        stale = run_cli("lock", "--check", profile, "--cache-dir", tmp_path / "c2", *FAST)
        assert stale.returncode == 4
        assert "upgraded hello 2.1-r3 -> 2.1-r4 (x86_64)" in stale.stdout.splitlines()
        assert "stale (1 upgraded)" in stale.stderr
        updated = run_cli("lock", "--update", profile, "--cache-dir", cache, *FAST)
        assert updated.returncode == 0, updated.stderr
        assert "upgraded hello 2.1-r3 -> 2.1-r4 (x86_64)" in updated.stdout.splitlines()
        lock = parse_lock(profile.with_name("pinned" + LOCK_SUFFIX).read_bytes(), what="lock")
        assert {p.name: p.version for p in lock.arches[0].packages}["hello"] == "2.1-r4"
