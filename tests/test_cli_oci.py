"""OCI outputs end to end: build through the CLI, then check with real skopeo and umoci."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import require_shared, run_cli, write_profile
from tests.helpers.gpg import SigningKey
from tests.helpers.mirror import MirrorInfo, build_mirror

pytestmark = pytest.mark.slow

CONFIG = {
    "entrypoint": ["/bin/sh", "-c"],
    "cmd": ["echo hello"],
    "env": {"LANG": "C.UTF-8"},
    "labels": {"org.example.team": "platform"},
    "working_dir": "/srv",
    "user": "65534",
    "exposed_ports": ["8080/tcp"],
    "volumes": ["/data"],
    "stop_signal": "SIGTERM",
    "revision": "abc123",
    "source": "https://example.org/repo",
}


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt-get install {tool}); .ci/run installs it")
    return path


def tool(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([os.fspath(a) for a in args], capture_output=True, text=True, timeout=300)


def oci_profile(tmp_path: Path, mirror: MirrorInfo, key: SigningKey, **fields: object) -> Path:
    return write_profile(tmp_path / "p", mirror_url=mirror.file_url, key=key, name="img",
                         config=CONFIG,
                         outputs=[{"format": "tar", "compression": "gzip"},
                                  {"format": "oci", "tag": "3.20-rl"},
                                  {"format": "oci-archive", "tag": "3.20-rl"},
                                  {"format": "docker-archive", "tag": "3.20-rl"}], **fields)


def test_oci_outputs_load_in_real_tools(tmp_path: Path, mirror: MirrorInfo,
                                        signing_key: SigningKey) -> None:
    need("skopeo")
    need("umoci")
    profile = oci_profile(tmp_path, mirror, signing_key)
    out = tmp_path / "out"
    result = run_cli("build", profile, "--output-dir", out, "--cache-dir", tmp_path / "c")
    assert result.returncode == 0, result.stderr
    folder = out / "img"
    layout = folder / "oci"
    printed = [line.split("  ", 1)[1] for line in result.stdout.splitlines()]
    assert printed == [str(folder / n) for n in (
        "img-3.20.3-x86_64.docker.tar", "img-3.20.3-x86_64.tar.gz", "img-3.20.3.oci.tar", "oci")]

    inspect = tool("skopeo", "inspect", f"oci:{layout}:3.20-rl")
    assert inspect.returncode == 0, inspect.stderr
    info = json.loads(inspect.stdout)
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert "LANG=C.UTF-8" in info["Env"]
    assert info["Labels"] == {"org.example.team": "platform"}
    config = json.loads(tool("skopeo", "inspect", "--config", f"oci:{layout}:3.20-rl").stdout)
    assert config["config"]["Entrypoint"] == ["/bin/sh", "-c"]
    assert config["config"]["Cmd"] == ["echo hello"]
    assert config["config"]["WorkingDir"] == "/srv" and config["config"]["User"] == "65534"
    assert config["config"]["ExposedPorts"] == {"8080/tcp": {}}
    assert config["config"]["Volumes"] == {"/data": {}}
    assert config["config"]["StopSignal"] == "SIGTERM"

    manifest = json.loads((folder / "manifest.json").read_text())
    index_record = next(o for o in manifest["outputs"] if o["path"] == "oci/index.json")
    image_digest = index_record["digest"]
    assert info["Digest"] == image_digest
    assert f"{image_digest}  {layout}" in result.stdout.splitlines()
    blobs = {o["path"] for o in manifest["outputs"] if o["path"].startswith("oci/blobs/")}
    assert blobs == {f"oci/blobs/sha256/{p.name}" for p in (layout / "blobs" / "sha256").iterdir()}
    roles = {o["format"]: o for o in manifest["outputs"] if o["path"].startswith("oci/blobs/")}
    assert sorted(roles) == ["oci-image-config", "oci-image-manifest", "oci-layer"]
    assert roles["oci-image-manifest"]["digest"] == image_digest  # one platform: the manifest
    assert index_record["format"] == "oci-index-json"
    config_digest = "sha256:" + hashlib.sha256(
        (layout / "blobs" / "sha256" / roles["oci-image-config"]["digest"][7:]).read_bytes()
    ).hexdigest()
    assert config_digest == roles["oci-image-config"]["digest"]
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=folder).returncode == 0
    assert run_cli("verify", folder).returncode == 0

    for archive, transport in ((folder / "img-3.20.3.oci.tar", "oci-archive"),
                               (folder / "img-3.20.3-x86_64.docker.tar", "docker-archive")):
        copied = tool("skopeo", "copy", f"{transport}:{archive}", f"oci:{tmp_path / transport}:x")
        assert copied.returncode == 0, copied.stderr
    copied = tool("skopeo", "copy", f"oci:{layout}:3.20-rl", f"docker-archive:{tmp_path / 'd.tar'}:img:x")
    assert copied.returncode == 0, copied.stderr

    bundle = tmp_path / "bundle"
    unpack = tool("umoci", "unpack", *([] if os.geteuid() == 0 else ["--rootless"]),
                  "--image", f"{layout}:3.20-rl", bundle)
    assert unpack.returncode == 0, unpack.stderr
    rootfs = bundle / "rootfs"
    with tarfile.open(folder / "img-3.20.3-x86_64.tar.gz") as tf:
        for member in tf:
            name = member.name.removeprefix("./").rstrip("/")
            if not name:
                continue
            st = os.lstat(rootfs / name)
            assert st.st_mode & 0o7777 == member.mode, name
            if os.geteuid() == 0:
                assert (st.st_uid, st.st_gid) == (member.uid, member.gid), name
            if member.issym():
                assert os.readlink(rootfs / name) == member.linkname
            elif member.isfile():
                assert (rootfs / name).read_bytes() == tf.extractfile(member).read(), name

    again = run_cli("build", profile, "--output-dir", tmp_path / "out2", "--cache-dir", tmp_path / "c")
    assert again.returncode == 0
    assert (tmp_path / "out2" / "img" / "SHA256SUMS").read_bytes() == (folder / "SHA256SUMS").read_bytes()


def test_corrupt_blob_is_found_by_verify(tmp_path: Path, mirror: MirrorInfo,
                                         signing_key: SigningKey) -> None:
    profile = oci_profile(tmp_path, mirror, signing_key)
    out = tmp_path / "out"
    assert run_cli("build", profile, "--output-dir", out, "--cache-dir", tmp_path / "c").returncode == 0
    layer = max((out / "img" / "oci" / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    data = bytearray(layer.read_bytes())
    data[100] ^= 0xFF
    layer.write_bytes(bytes(data))
    bad = run_cli("verify", out / "img")
    assert bad.returncode == 4
    assert f"oci/blobs/sha256/{layer.name}" in bad.stderr


def test_multi_arch_index(tmp_path: Path, signing_key: SigningKey) -> None:
    need("skopeo")
    root = tmp_path / "mirror"
    build_mirror(root, key=signing_key, arch="x86_64")
    arm = build_mirror(root, key=signing_key, arch="aarch64")
    profile = write_profile(tmp_path / "p", mirror_url=arm.file_url, key=signing_key, name="multi",
                            arch=["x86_64", "aarch64"],
                            outputs=[{"format": "oci", "tag": "edge"},
                                     {"format": "oci-archive", "tag": "edge"}])
    out = tmp_path / "out"
    result = run_cli("build", profile, "--output-dir", out, "--cache-dir", tmp_path / "c")
    assert result.returncode == 0, result.stderr
    layout = out / "multi" / "oci"
    manifest = json.loads((out / "multi" / "manifest.json").read_text())
    formats = [o["format"] for o in manifest["outputs"]]
    assert formats.count("oci-image-manifest") == 2 and formats.count("oci-image-index") == 1
    index_json = next(o for o in manifest["outputs"] if o["path"] == "multi/oci/index.json"
                      or o["path"] == "oci/index.json")
    index_blob = next(o for o in manifest["outputs"] if o["format"] == "oci-image-index")
    assert index_json["digest"] == index_blob["digest"]
    for arch, expected in (("amd64", "amd64"), ("arm64", "arm64")):
        shown = tool("skopeo", "--override-arch", arch, "inspect", f"oci:{layout}:edge")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["Architecture"] == expected
    docker = write_profile(tmp_path / "p2", mirror_url=arm.file_url, key=signing_key, name="multi",
                           arch=["x86_64", "aarch64"], outputs=[{"format": "docker-archive"}])
    refused = run_cli("build", docker, "--output-dir", tmp_path / "o2", "--cache-dir", tmp_path / "c")
    assert refused.returncode == 2 and "docker-archive holds one platform" in refused.stderr


def test_real_minirootfs_oci_matches_alpine(tmp_path: Path, signing_key: SigningKey) -> None:
    need("umoci")
    fixtures = require_shared()
    real = fixtures / "minirootfs" / "alpine-minirootfs-3.20.3-x86_64.tar.gz"
    mirror = build_mirror(tmp_path / "mirror", key=signing_key, tarball=real.read_bytes())
    profile = write_profile(tmp_path / "p", mirror_url=mirror.file_url, key=signing_key,
                            name="real", outputs=[{"format": "oci", "tag": "3.20"}])
    out = tmp_path / "out"
    result = run_cli("build", profile, "--output-dir", out, "--cache-dir", tmp_path / "c")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "real" / "manifest.json").read_text())
    sboms = sorted(o["path"] for o in manifest["outputs"] if o["format"] in ("spdx", "cyclonedx"))
    assert sboms == ["real-3.20.3-x86_64.cdx.json", "real-3.20.3-x86_64.spdx.json"]
    spdx = json.loads((out / "real" / "real-3.20.3-x86_64.spdx.json").read_text())
    names = sorted(p["name"] for p in spdx["packages"])
    assert "busybox" in names and "musl" in names and len(names) >= 14
    bundle = tmp_path / "bundle"
    unpack = tool("umoci", "unpack", *([] if os.geteuid() == 0 else ["--rootless"]),
                  "--image", f"{out / 'real' / 'oci'}:3.20", bundle)
    assert unpack.returncode == 0, unpack.stderr
    with tarfile.open(real) as tf:
        for member in tf:
            name = member.name.removeprefix("./").rstrip("/")
            if not name:
                continue
            path = bundle / "rootfs" / name
            st = os.lstat(path)
            assert st.st_mode & 0o7777 == member.mode, name
            if member.issym():
                assert os.readlink(path) == member.linkname
            elif member.isfile():
                assert path.read_bytes() == tf.extractfile(member).read(), name


def test_podman_loads_the_oci_archive(tmp_path: Path, mirror: MirrorInfo,
                                      signing_key: SigningKey) -> None:
    """Interop only: podman cannot run containers in this sandbox, but it can load images."""
    need("podman")
    profile = oci_profile(tmp_path, mirror, signing_key)
    out = tmp_path / "out"
    assert run_cli("build", profile, "--output-dir", out, "--cache-dir", tmp_path / "c").returncode == 0
    loaded = tool("podman", "load", "-i", out / "img" / "img-3.20.3.oci.tar")
    if loaded.returncode != 0 and ("cgroup" in loaded.stderr or "rlimit" in loaded.stderr
                                   or "namespace" in loaded.stderr):
        pytest.skip(f"podman cannot work in this sandbox: {loaded.stderr.splitlines()[0]}")
    assert loaded.returncode == 0, loaded.stderr
    assert "Loaded image" in loaded.stdout + loaded.stderr
