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
from tests.stages.test_mirror import TOOLS, full_mirror  # noqa: F401 (a fixture)
from tests.test_cli_packages import HELLO

FAST = ("--retries", "0", "--retry-delay", "0")
HELLO_APK = "v3.20/main/x86_64/hello-2.1-r3.apk"


@pytest.fixture
def live(full_mirror: MirrorInfo) -> MirrorInfo:  # noqa: F811
    """Alpine's layout in one folder (the signed release and v3.20's main and community): the
    live mirror that moves on."""
    return full_mirror


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


def test_rebuild_uses_the_recorded_lock_after_the_mirror_moved_on(
        tmp_path: Path, live: MirrorInfo, signing_key: SigningKey) -> None:
    """An unlocked build records its plan as lock.json; `verify --rebuild` installs exactly
    that, even once the mirror has a newer hello and no longer the old one."""
    with serve_directory(live.root) as server:
        profile = locked_profile(tmp_path / "p", server, signing_key)
        out, cache = tmp_path / "out", tmp_path / "cache"
        built = run_cli("build", profile, "--output-dir", out, "--cache-dir", cache, *FAST)
        assert built.returncode == 0, built.stderr
        manifest = json.loads((out / "pinned" / "manifest.json").read_text())
        assert manifest["lock"]["locked"] is False
        newer = [s if s.name != "hello" else PackageSpec(
            name="hello", version="2.1-r4", depends=s.depends, files=s.files) for s in HELLO]
        shutil.rmtree(live.root / "v3.20" / "main")
        build_repository(live.root / "v3.20" / "main", newer, apk_signing_key())
        again = run_cli("verify", "--rebuild", profile, "--output-dir", out, "--cache-dir", cache,
                        *FAST)
        assert again.returncode == 0, again.stderr
        assert "with the lock the build recorded" in again.stderr
        assert "taking the locked packages from it by checksum" not in again.stderr
        cold = run_cli("verify", "--rebuild", profile, "--output-dir", out,
                       "--cache-dir", tmp_path / "cold", *FAST)
        assert cold.returncode == 3
        assert "package hello-2.1-r3 (x86_64) is locked, but the index of v3.20/main no longer " \
               "lists it" in cold.stderr
        assert "alpine-composer vendor" in cold.stderr
    lock = out / "pinned" / "lock.json"
    lock.write_bytes(lock.read_bytes().replace(b'"2.1-r3"', b'"2.1-r4"'))
    checked = run_cli("verify", out / "pinned")
    assert checked.returncode == 4
    assert f"{lock}: sha256 " in checked.stderr and "manifest.json records" in checked.stderr


def edge_mirror(root: Path, key: SigningKey, version: str, tarball: bytes) -> MirrorInfo:
    return build_mirror(root, key=key, branch="edge", version=version, tarball=tarball)


def test_shipped_edge_profile_is_reproducible_through_its_lock(
        tmp_path: Path, signing_key: SigningKey) -> None:
    """The shipped edge profile (the real edge snapshot of 2024-09-23 on a test mirror): an
    unlocked build warns once and records what it read; once the mirror publishes the next
    snapshot, only the locked build still gives the first bytes."""
    from tests.conftest import REPO, require_shared

    real = require_shared() / "minirootfs" / "alpine-minirootfs-20240923-x86_64.tar.gz"
    mirror = edge_mirror(tmp_path / "mirror", signing_key, "20240923", real.read_bytes())
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "release-key.asc").write_bytes(signing_key.public_armored)
    profile = folder / "edge.yaml"
    profile.write_text(yaml.safe_dump({
        "name": "edge", "extends": str(REPO / "profiles" / "edge.yaml"),
        "mirror": mirror.file_url,
        "trust": {"fingerprint": signing_key.fingerprint, "key": "release-key.asc"}}))
    cache = tmp_path / "cache"
    unlocked = run_cli("build", profile, "--output-dir", tmp_path / "out", "--cache-dir", cache)
    assert unlocked.returncode == 0, unlocked.stderr
    assert unlocked.stderr.count("this build is not locked") == 1
    manifest = json.loads((tmp_path / "out" / "edge" / "manifest.json").read_text())
    assert any(n.startswith("edge built without a lock") for n in manifest["notes"])
    first = artifacts(tmp_path / "out" / "edge")
    assert sorted(first) == ["SHA256SUMS", "edge-20240923-x86_64.cdx.json",
                             "edge-20240923-x86_64.spdx.json", "edge-20240923-x86_64.tar.zst"]

    made = run_cli("lock", profile, "--cache-dir", cache)
    assert made.returncode == 0, made.stderr
    lock = parse_lock(profile.with_name("edge.lock.json").read_bytes(), what="lock")
    assert lock.branch == "edge" and lock.arches[0].release == "20240923"
    assert lock.arches[0].minirootfs is not None
    assert lock.arches[0].minirootfs.path == \
        "edge/releases/x86_64/alpine-minirootfs-20240923-x86_64.tar.gz"

    # The next day edge publishes a new snapshot (and lists only it).
    from tests.helpers.mirror import make_minirootfs_tarball

    edge_mirror(tmp_path / "mirror", signing_key, "20240924", make_minirootfs_tarball("20240924"))
    moved = run_cli("lock", "--check", profile, "--cache-dir", cache)
    assert moved.returncode == 4
    assert "upgraded minirootfs 20240923 -> 20240924 (x86_64)" in moved.stdout.splitlines()
    locked = run_cli("build", profile, "--output-dir", tmp_path / "out-locked",
                     "--cache-dir", tmp_path / "cold")
    assert locked.returncode == 0, locked.stderr
    assert "not locked" not in locked.stderr
    assert artifacts(tmp_path / "out-locked" / "edge") == first


def test_unlocked_edge_build_records_the_indexes_it_read(tmp_path: Path,
                                                         signing_key: SigningKey) -> None:
    mirror = edge_mirror(tmp_path / "mirror", signing_key, "20240923", minirootfs_without_world())
    build_repository(mirror.root / "edge" / "main", HELLO, apk_signing_key())
    build_repository(mirror.root / "edge" / "community", TOOLS, apk_signing_key())
    apk_key = apk_signing_key()
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / apk_key.name).write_bytes(apk_key.public_pem)
    profile = write_profile(folder, mirror_url=mirror.file_url, key=signing_key, name="e",
                            variant="edge", branch="edge", packages=["hello"], keys=[apk_key.name])
    result = run_cli("build", profile, "--output-dir", tmp_path / "out",
                     "--cache-dir", tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("this build is not locked") == 1
    manifest = json.loads((tmp_path / "out" / "e" / "manifest.json").read_text())
    import hashlib

    seen = {i["url"].removeprefix(mirror.file_url + "/"): i["sha256"]
            for i in manifest["inputs"] if i["kind"] == "apkindex"}
    assert seen == {f"edge/{repo}/x86_64/APKINDEX.tar.gz": hashlib.sha256(
        (mirror.root / "edge" / repo / "x86_64" / "APKINDEX.tar.gz").read_bytes()).hexdigest()
        for repo in ("main", "community")}


def test_real_alpine_repository_locks_vendors_and_rebuilds(tmp_path: Path) -> None:
    """Alpine's own signed 3.19.1 index and packages (the standard ISO's repository), laid
    out as v3.19/main of a mirror: the lock pins their real digests, vendor copies the
    original signed index, and the offline rebuild from it has the same bytes."""
    from tests.conftest import require_shared

    fixtures = require_shared()
    repo = tmp_path / "mirror" / "v3.19" / "main"
    shutil.copytree(fixtures / "iso-3.19.1-x86_64" / "apks", repo)
    key = "alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub"
    folder = tmp_path / "p"
    folder.mkdir()
    shutil.copy(fixtures / "apk-keys" / key, folder / key)
    profile = folder / "real.yaml"
    profile.write_text(yaml.safe_dump({
        "name": "real", "base": "packages", "branch": "v3.19",
        "mirror": (tmp_path / "mirror").as_uri(), "repositories": ["main"],
        "packages": ["alpine-baselayout", "alpine-keys", "apk-tools", "busybox", "libc-utils"],
        "keys": [key], "outputs": [{"format": "tar", "compression": "gzip"}]}))
    assert run_cli("lock", profile, "--cache-dir", tmp_path / "c").returncode == 0
    lock = parse_lock(profile.with_name("real.lock.json").read_bytes(), what="lock")
    (arch,) = lock.arches
    assert arch.minirootfs is None
    (index,) = arch.repositories
    import hashlib

    assert index.sha256 == hashlib.sha256((repo / "x86_64" / "APKINDEX.tar.gz").read_bytes()) \
        .hexdigest()
    assert index.signer == key
    busybox = next(p for p in arch.packages if p.name == "busybox")
    assert (busybox.version, busybox.checksum, busybox.sha256) == (
        "1.36.1-r15", "Q1AYNx2pLOAHRYZQgv3nM8TNtvRWY=",
        "997f38499967e55a60d759cfade0a1c62f517a318e4d0ce4bb9b23faf0c44cee")  # SOURCES.md
    assert len(arch.packages) == 15
    built = run_cli("build", profile, "--output-dir", tmp_path / "out", "--cache-dir",
                    tmp_path / "c")
    assert built.returncode == 0, built.stderr
    vendored = tmp_path / "vendored"
    assert run_cli("vendor", profile, vendored, "--cache-dir", tmp_path / "c").returncode == 0
    assert (vendored / "v3.19/main/x86_64/APKINDEX.tar.gz").read_bytes() == \
        (repo / "x86_64" / "APKINDEX.tar.gz").read_bytes()
    assert len(list((vendored / "v3.19/main/x86_64").glob("*.apk"))) == 15
    shutil.rmtree(tmp_path / "mirror")
    offline = run_cli("build", profile, "--mirror", vendored, "--offline", "--output-dir",
                      tmp_path / "out2", "--cache-dir", tmp_path / "empty")
    assert offline.returncode == 0, offline.stderr
    assert artifacts(tmp_path / "out2" / "real") == artifacts(tmp_path / "out" / "real")


def test_two_profiles_locked_on_different_days_share_one_vendored_mirror(
        tmp_path: Path, live: MirrorInfo, signing_key: SigningKey) -> None:
    with serve_directory(live.root) as server:
        old = locked_profile(tmp_path / "old", server, signing_key)
        cache = tmp_path / "cache"
        assert run_cli("lock", old, "--cache-dir", cache, *FAST).returncode == 0
        vendored = tmp_path / "v"
        assert run_cli("vendor", old, vendored, "--cache-dir", cache, *FAST).returncode == 0
        newer = [s if s.name != "hello" else PackageSpec(
            name="hello", version="2.1-r4", depends=s.depends, files=s.files) for s in HELLO]
        shutil.rmtree(live.root / "v3.20" / "main")
        build_repository(live.root / "v3.20" / "main", newer, apk_signing_key())
        new = locked_profile(tmp_path / "new", server, signing_key)
        assert run_cli("lock", new, "--cache-dir", cache, *FAST).returncode == 0
        second = run_cli("vendor", new, vendored, "--cache-dir", cache, *FAST)
        assert second.returncode == 0, second.stderr
    import hashlib

    index = (live.root / "v3.20/main/x86_64/APKINDEX.tar.gz").read_bytes()
    side = f"v3.20/main/x86_64/APKINDEX.{hashlib.sha256(index).hexdigest()}.tar.gz"
    assert sorted(line.split("  ", 1)[1].removeprefix(str(vendored) + "/")
                  for line in second.stdout.splitlines() if line.startswith("added")) == sorted([
        "v3.20/main/x86_64/hello-2.1-r4.apk", side])
    assert (vendored / side).read_bytes() == index
    assert (vendored / "v3.20/main/x86_64/hello-2.1-r3.apk").is_file()
    for profile in (old, new):
        out = tmp_path / f"out-{profile.parent.name}"
        result = run_cli("build", profile, "--mirror", vendored, "--offline", "--output-dir", out,
                         "--cache-dir", tmp_path / f"empty-{profile.parent.name}", *FAST)
        assert result.returncode == 0, result.stderr
        assert "taking the locked packages from it by checksum" not in result.stderr
    (vendored / "v3.20/main/x86_64/hello-2.1-r4.apk").write_bytes(b"not the package")
    refused = run_cli("vendor", new, vendored, "--cache-dir", cache, *FAST)
    assert refused.returncode == 4
    assert "hello-2.1-r4.apk: holds other bytes than the sha256" in refused.stderr


def test_a_locked_source_date_epoch_is_kept(tmp_path: Path, live: MirrorInfo,
                                           signing_key: SigningKey) -> None:
    profile = locked_profile(tmp_path / "p", type("S", (), {"url": live.file_url})(),  # type: ignore[arg-type]
                             signing_key, outputs=[{"format": "tar", "compression": "none"}])
    cache = tmp_path / "cache"
    made = run_cli("lock", profile, "--cache-dir", cache, env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert made.returncode == 0, made.stderr
    lock = parse_lock(profile.with_name("pinned" + LOCK_SUFFIX).read_bytes(), what="lock")
    assert (lock.source_date_epoch, lock.epoch_source) == (1700000000, "environment")
    built = run_cli("build", profile, "--output-dir", tmp_path / "out", "--cache-dir", cache)
    assert built.returncode == 0, built.stderr
    manifest = json.loads((tmp_path / "out" / "pinned" / "manifest.json").read_text())
    assert (manifest["source_date_epoch"], manifest["epoch_source"]) == (1700000000, "lock")
    other = run_cli("build", profile, "--output-dir", tmp_path / "out2", "--cache-dir", cache,
                    env={"SOURCE_DATE_EPOCH": "1700000001"})
    assert other.returncode == 0
    assert "SOURCE_DATE_EPOCH=1700000001 overrides the timestamp 1700000000" in other.stderr
