"""End to end through the CLI: build from a signed mirror, hashes, reproducibility, verify."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import run_cli, write_profile
from tests.helpers.gpg import SigningKey
from tests.helpers.httpserver import Server
from tests.helpers.mirror import MINIROOTFS_MTIME, MirrorInfo

OVERLAY = {
    "hostname": "box",
    "files": [
        {"path": "/etc/motd", "content": "hello\n", "mode": "0600"},
        {"path": "/opt/app/config", "source": "files/config", "mode": "0640", "uid": 1000,
         "gid": 1000},
    ],
    "directories": [{"path": "/srv/data", "mode": "0750"}],
    "symlinks": [{"path": "/usr/local/bin/app", "target": "/opt/app/bin/app"}],
    "tree": "tree",
}


def overlay_profile(folder: Path, mirror_url: str, key: SigningKey, **fields: object) -> Path:
    (folder / "files").mkdir(parents=True, exist_ok=True)
    (folder / "files" / "config").write_bytes(b"setting = 1\n")
    for name in ("zeta", "alpha", "mid"):  # created out of order on purpose
        target = folder / "tree" / "etc" / "conf.d" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(name)
        target.chmod(0o644)
    (folder / "tree" / "etc" / "conf.d" / "mid").chmod(0o755)
    return write_profile(folder, mirror_url=mirror_url, key=key, overlay=OVERLAY, **fields)


def members(path: Path) -> dict[str, tuple[object, ...]]:
    """name → (type, mode, uid, gid, link target, mtime, content); hard links read as files,
    since which of the linked names carries the data is the writer's choice."""
    with tarfile.open(path) as tf:
        return {m.name: (tarfile.REGTYPE if m.islnk() else m.type, m.mode, m.uid, m.gid,
                         "" if m.islnk() else m.linkname, m.mtime,
                         tf.extractfile(m).read() if m.isfile() or m.islnk() else None)
                for m in tf}


def test_build_over_http(tmp_path: Path, workdir: Path, mirror: MirrorInfo,
                         http_mirror: Server, signing_key: SigningKey) -> None:
    profile = overlay_profile(workdir, http_mirror.url, signing_key)
    out = tmp_path / "out"
    result = run_cli("build", profile, "--output-dir", out, "--cache-dir", tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    artifact = out / "test" / "test-3.20.3-x86_64.tar.gz"
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert result.stdout == f"sha256:{digest}  {artifact}\n"
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out / "test",
                           capture_output=True, text=True)
    assert check.returncode == 0 and "test-3.20.3-x86_64.tar.gz: OK" in check.stdout

    manifest = json.loads((out / "test" / "manifest.json").read_text())
    assert manifest["releases"] == {"x86_64": "3.20.3"}
    assert manifest["source_date_epoch"] == MINIROOTFS_MTIME
    assert manifest["epoch_source"] == "inputs"
    assert manifest["outputs"] == [{"path": "test-3.20.3-x86_64.tar.gz", "sha256": digest,
                                    "size": artifact.stat().st_size, "format": "tar",
                                    "arch": "x86_64"}]
    by_kind = {i["kind"]: i for i in manifest["inputs"]}
    mini = by_kind["minirootfs"]
    assert mini["url"] == f"{http_mirror.url}/v3.20/releases/x86_64/{mirror.filename}"
    assert (mini["sha256"], mini["size"]) == (mirror.sha256, mirror.size)
    assert mini["signed_by"].upper() == signing_key.fingerprint
    assert by_kind["release-key"]["fingerprint"] == signing_key.fingerprint
    overlay_inputs = sorted(i["name"] for i in manifest["inputs"] if i["kind"] == "overlay")
    assert overlay_inputs == ["files/config", "tree/etc/conf.d/alpha", "tree/etc/conf.d/mid",
                              "tree/etc/conf.d/zeta"]
    assert manifest["profile"]["digest"].startswith("sha256:")

    got = members(artifact)
    assert got["./etc/motd"][1:4] == (0o600, 0, 0) and got["./etc/motd"][6] == b"hello\n"
    assert got["./opt/app/config"][1:4] == (0o640, 1000, 1000)
    assert got["./etc/hostname"][6] == b"box\n"
    assert got["./srv/data"][0] == tarfile.DIRTYPE and got["./srv/data"][1] == 0o750
    assert got["./usr/local/bin/app"][4] == "/opt/app/bin/app"
    assert got["./etc/conf.d/mid"][1] == 0o755 and got["./etc/conf.d/alpha"][1] == 0o644
    assert {m[5] for m in got.values()} == {MINIROOTFS_MTIME}
    base = members(mirror.tarball_path)
    for name, value in base.items():
        if name not in ("./etc/motd", "./etc/hostname"):
            assert got[name][:5] == value[:5] and got[name][6] == value[6], name

    json_run = run_cli("build", profile, "--output-dir", out, "--cache-dir", tmp_path / "cache",
                       "--json")
    assert json_run.returncode == 0
    assert json.loads(json_run.stdout) == {"ok": True, "output_dir": str(out / "test"),
                                           "manifest": manifest}


def test_builds_are_identical_across_tz_umask_cwd_and_transport(
        tmp_path: Path, workdir: Path, mirror: MirrorInfo, http_mirror: Server,
        signing_key: SigningKey) -> None:
    http_profile = overlay_profile(workdir / "a", http_mirror.url, signing_key)
    file_profile = overlay_profile(workdir / "b", mirror.file_url, signing_key)
    runs = [
        (http_profile, {}, None, workdir),
        (http_profile, {"TZ": "Asia/Kathmandu", "LC_ALL": "C.UTF-8"}, 0o077, tmp_path),
        (file_profile, {"TZ": "America/St_Johns"}, 0o002, Path("/")),
    ]
    digests = set()
    for i, (profile, env, umask, cwd) in enumerate(runs):
        out = tmp_path / f"out{i}"
        result = run_cli("build", profile, "--output-dir", out, "--cache-dir",
                         tmp_path / f"cache{i}", env=env, umask=umask, cwd=cwd)
        assert result.returncode == 0, result.stderr
        digests.add(hashlib.sha256(
            (out / "test" / "test-3.20.3-x86_64.tar.gz").read_bytes()).hexdigest())
    assert len(digests) == 1


def test_source_date_epoch_precedence(tmp_path: Path, workdir: Path, mirror: MirrorInfo,
                                      signing_key: SigningKey) -> None:
    profile = write_profile(workdir, mirror_url=mirror.file_url, key=signing_key,
                            source_date_epoch=1_600_000_000,
                            outputs=[{"format": "tar", "compression": "none"}])
    out = tmp_path / "out"
    run = run_cli("build", profile, "--output-dir", out, "--cache-dir", tmp_path / "c")
    assert run.returncode == 0, run.stderr
    tar = out / "test" / "test-3.20.3-x86_64.tar"
    assert {m[5] for m in members(tar).values()} == {1_600_000_000}
    run = run_cli("build", profile, "--output-dir", out, "--cache-dir", tmp_path / "c",
                  env={"SOURCE_DATE_EPOCH": "1500000000"})
    assert run.returncode == 0, run.stderr
    assert {m[5] for m in members(tar).values()} == {1_500_000_000}
    assert json.loads((out / "test" / "manifest.json").read_text())["epoch_source"] == "environment"
    run = run_cli("build", profile, "--output-dir", out, "--cache-dir", tmp_path / "c",
                  env={"SOURCE_DATE_EPOCH": "yesterday"})
    assert run.returncode == 2
    assert run.stderr.splitlines()[-1] == (
        "alpine-composer: error: SOURCE_DATE_EPOCH='yesterday' is not a whole "
        "number of seconds since 1970")


@pytest.mark.parametrize("compression,suffix,opener", [
    ("zstd", ".tar.zst", "zstd"), ("xz", ".tar.xz", "xz"), ("none", ".tar", "cat")])
def test_other_compressions(tmp_path: Path, workdir: Path, mirror: MirrorInfo,
                            signing_key: SigningKey, compression: str, suffix: str,
                            opener: str) -> None:
    profile = write_profile(workdir, mirror_url=mirror.file_url, key=signing_key,
                            outputs=[{"format": "tar", "compression": compression}])
    out = tmp_path / "out"
    assert run_cli("build", profile, "--output-dir", out, "--cache-dir", tmp_path / "c").returncode == 0
    artifact = out / "test" / f"test-3.20.3-x86_64{suffix}"
    plain = gzip.decompress(mirror.tarball)
    with tarfile.open(fileobj=io.BytesIO(plain)) as tf:
        expected = sorted(m.name for m in tf)
    if compression == "zstd":
        import zstandard
        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(artifact.read_bytes())).read()
    elif compression == "xz":
        import lzma
        data = lzma.decompress(artifact.read_bytes())
    else:
        data = artifact.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        assert sorted(m.name for m in tf) == expected


def test_verify_and_rebuild_then_tamper(tmp_path: Path, workdir: Path, mirror: MirrorInfo,
                                        http_mirror: Server, signing_key: SigningKey) -> None:
    profile = overlay_profile(workdir, http_mirror.url, signing_key,
                              outputs=[{"format": "tar", "compression": "none"}])
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    assert run_cli("build", profile, "--output-dir", out, "--cache-dir", cache).returncode == 0
    folder = out / "test"
    artifact = folder / "test-3.20.3-x86_64.tar"

    ok = run_cli("verify", folder)
    assert ok.returncode == 0 and ok.stdout == f"OK  {artifact}\n"
    assert run_cli("verify", artifact).returncode == 0
    again = run_cli("verify", "--rebuild", profile, "--output-dir", out, "--cache-dir", cache,
                    env={"TZ": "Pacific/Chatham"})
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"rebuild identical  {artifact}\n"
    assert sorted(p.name for p in out.iterdir()) == ["test"]  # the scratch build is gone

    data = bytearray(artifact.read_bytes())
    with tarfile.open(artifact) as tf:
        motd = tf.getmember("./etc/motd")
    data[motd.offset_data] ^= 0x01  # one byte of /etc/motd's content
    artifact.write_bytes(bytes(data))

    bad = run_cli("verify", folder)
    assert bad.returncode == 4
    assert bad.stderr.startswith(f"alpine-composer: error: {artifact}: sha256 ")
    rebuilt = run_cli("verify", "--rebuild", profile, "--output-dir", out, "--cache-dir", cache)
    assert rebuilt.returncode == 4
    assert "alpine-composer: error: " in rebuilt.stderr

    # Put the published SHA256SUMS in line with the tampered file: only a rebuild can tell.
    digest = hashlib.sha256(bytes(data)).hexdigest()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["outputs"][0]["sha256"] = digest
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "SHA256SUMS").write_text(f"{digest}  {artifact.name}\n")
    caught = run_cli("verify", folder)  # the provenance statement still names the old digest
    assert caught.returncode == 4 and "provenance.intoto.json: subject" in caught.stderr
    statement = json.loads((folder / "provenance.intoto.json").read_text())
    statement["subject"][0]["digest"]["sha256"] = digest
    (folder / "provenance.intoto.json").write_text(json.dumps(statement))
    assert run_cli("verify", folder).returncode == 0
    rebuilt = run_cli("verify", "--rebuild", profile, "--output-dir", out, "--cache-dir", cache)
    assert rebuilt.returncode == 4
    assert rebuilt.stderr.splitlines()[-1] == (
        f"alpine-composer: error: {artifact}: rebuild differs: member './etc/motd': content "
        f"sha256 {hashlib.sha256(b'iello' + chr(10).encode()).hexdigest()[:16]}… != "
        f"{hashlib.sha256(b'hello' + chr(10).encode()).hexdigest()[:16]}…")


def test_offline_uses_the_cache_and_names_what_is_missing(
        tmp_path: Path, workdir: Path, mirror: MirrorInfo, http_mirror: Server,
        signing_key: SigningKey) -> None:
    profile = write_profile(workdir, mirror_url=http_mirror.url, key=signing_key)
    cache = tmp_path / "cache"
    missing = run_cli("build", profile, "--offline", "--output-dir", tmp_path / "o1",
                      "--cache-dir", cache)
    assert missing.returncode == 3
    assert "--offline" in missing.stderr and "latest-releases.yaml" in missing.stderr
    fetched = run_cli("fetch", profile, "--cache-dir", cache)
    assert fetched.returncode == 0, fetched.stderr
    assert f"sha256:{mirror.sha256}  {http_mirror.url}/v3.20/releases/x86_64/{mirror.filename}" \
        in fetched.stdout
    before = len(http_mirror.requests)
    offline = run_cli("build", profile, "--offline", "--output-dir", tmp_path / "o2",
                      "--cache-dir", cache)
    assert offline.returncode == 0, offline.stderr
    assert len(http_mirror.requests) == before  # no network at all
    online = run_cli("build", profile, "--output-dir", tmp_path / "o3", "--cache-dir", cache)
    assert (tmp_path / "o2" / "test" / "test-3.20.3-x86_64.tar.gz").read_bytes() == \
        (tmp_path / "o3" / "test" / "test-3.20.3-x86_64.tar.gz").read_bytes()
    assert online.returncode == 0


def test_version_schema_and_usage(tmp_path: Path) -> None:
    version = run_cli("version")
    assert version.returncode == 0 and version.stdout.startswith("alpine-composer ")
    schema = run_cli("schema", "-o", tmp_path / "s.json")
    assert schema.returncode == 0
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["additionalProperties"] is False and "overlay" in data["properties"]
    usage = run_cli("frobnicate")
    assert usage.returncode == 2 and usage.stderr.startswith("alpine-composer: error: ")
    assert run_cli("verify", tmp_path / "nope").returncode == 2


def test_console_script_matches_python_m(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("alpine-composer")
    if not script.exists():
        pytest.skip(f"the console script is not installed next to {sys.executable}")
    same = subprocess.run([script, "version"], capture_output=True, text=True)
    assert (same.returncode, same.stdout) == (0, run_cli("version").stdout)
    bad = subprocess.run([script, "verify", tmp_path / "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("alpine-composer: error: ")
