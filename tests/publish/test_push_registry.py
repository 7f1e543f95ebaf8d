"""``push`` and ``publish`` against a real registry (Debian's docker-registry, TLS + htpasswd),
read back with skopeo: the bytes a registry serves are the bytes the build wrote."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from composer.context import BuildContext
from composer.profile import load_profile
from composer.stages.pipeline import build
from tests.conftest import REPO, require_shared, run_cli, write_profile
from tests.helpers.gpg import SigningKey
from tests.helpers.mirror import build_mirror
from tests.helpers.registry import CuttingProxy, Registry, run_registry

pytestmark = pytest.mark.slow

USER, PASSWORD = "alice", "s3cret"


@dataclass(frozen=True)
class Built:
    folder: Path
    digest: str

    @property
    def layout(self) -> Path:
        return self.folder / "oci"

    def blob(self, digest: str) -> bytes:
        return (self.layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def build_profile(path: Path, out: Path, cache: Path) -> Built:
    ctx = BuildContext.from_environment(load_profile(path), env={}, output_dir=out, cache_dir=cache,
                                        progress=False, log=lambda _m: None)
    result = build(ctx)
    record = next(o for o in result.outputs if o.path == "oci/index.json")
    assert record.digest is not None
    return Built(result.output_dir, record.digest)


@pytest.fixture(scope="module")
def real_mirror(tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey) -> str:
    fixtures = require_shared() / "minirootfs"
    root = tmp_path_factory.mktemp("mirror")
    for arch in ("x86_64", "aarch64"):
        info = build_mirror(root, key=signing_key, arch=arch, tarball=(
            fixtures / f"alpine-minirootfs-3.20.3-{arch}.tar.gz").read_bytes())
    return info.file_url


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="module")
def single(work: Path, real_mirror: str, signing_key: SigningKey) -> Built:
    profile = write_profile(work / "p1", mirror_url=real_mirror, key=signing_key, name="mini",
                            outputs=[{"format": "oci", "tag": "3.20"}])
    return build_profile(profile, work / "out", work / "cache")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with run_registry(tmp_path_factory.mktemp("registry"), users={USER: PASSWORD}) as reg:
        yield reg


def auth_file(folder: Path, reg: Registry, user: str = USER, password: str = PASSWORD) -> Path:
    path = folder / "auth.json"
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
    return path


def push(reg: Registry, *args: str | os.PathLike[str], env: dict[str, str] | None = None,
         cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    flags: list[str | os.PathLike[str]] = ["--ca-cert", reg.ca] if reg.ca else ["--insecure"]
    if cache is not None:
        flags += ["--cache-dir", cache]
    return run_cli("push", *args, *flags, "--retry-delay", "0.05", env=env)


def cert_dir(reg: Registry) -> str:
    assert reg.ca is not None
    certs = reg.folder / "certs.d"
    certs.mkdir(exist_ok=True)
    (certs / "ca.crt").write_bytes(reg.ca.read_bytes())
    return str(certs)


def skopeo(reg: Registry, command: str, *args: str, override_arch: str | None = None
           ) -> subprocess.CompletedProcess[str]:
    """skopeo inspect/copy/list-tags from the test registry, with its CA and the test user."""
    prefix = ["--src-creds", f"{USER}:{PASSWORD}", "--src-cert-dir"] if command == "copy" \
        else ["--creds", f"{USER}:{PASSWORD}", "--cert-dir"]
    arch = ["--override-arch", override_arch] if override_arch else []
    return subprocess.run(["skopeo", *arch, command, *prefix, cert_dir(reg), *args],
                          capture_output=True, text=True, timeout=120)


def raw(reg: Registry, ref: str) -> bytes:
    shown = skopeo(reg, "inspect", "--raw", f"docker://{ref}")
    assert shown.returncode == 0, shown.stderr
    return shown.stdout.encode()


def test_push_single_arch_reads_back_byte_for_byte(tmp_path: Path, registry: Registry,
                                                  single: Built) -> None:
    ref = f"{registry.host}/team/mini:3.20"
    env = {"REGISTRY_AUTH_FILE": str(auth_file(tmp_path, registry))}
    started = time.monotonic()
    first = push(registry, single.folder, ref, env=env, cache=tmp_path / "c")
    took = time.monotonic() - started
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"{single.digest}  {ref}@{single.digest}\n"
    sums = (single.folder / "SHA256SUMS").read_text()
    manifest_bytes = single.blob(single.digest)
    assert f"{single.digest[7:]}  oci/blobs/sha256/{single.digest[7:]}" in sums

    assert raw(registry, ref) == manifest_bytes
    assert raw(registry, f"{registry.host}/team/mini@{single.digest}") == manifest_bytes
    copied = tmp_path / "copied"
    done = skopeo(registry, "copy", f"docker://{ref}", f"oci:{copied}:x")
    assert done.returncode == 0, done.stderr
    local = json.loads(manifest_bytes)
    index = json.loads((copied / "index.json").read_text())
    pulled = json.loads((copied / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_bytes())
    assert [layer["digest"] for layer in pulled["layers"]] == [layer["digest"] for layer in local["layers"]]
    assert pulled["config"]["digest"] == local["config"]["digest"]

    # The SBOMs went up as artifacts of the image; this registry has no referrers API, so
    # the spec's fallback tag sha256-<hex> lists them.
    referrers = json.loads(raw(registry, f"{registry.host}/team/mini:sha256-{single.digest[7:]}"))
    types = sorted(m["artifactType"] for m in referrers["manifests"])
    assert types == ["application/spdx+json", "application/vnd.cyclonedx+json"]
    spdx = next(m for m in referrers["manifests"] if m["artifactType"] == "application/spdx+json")
    artifact = json.loads(raw(registry, f"{registry.host}/team/mini@{spdx['digest']}"))
    assert artifact["subject"]["digest"] == single.digest
    sbom = (single.folder / "mini-3.20.3-x86_64.spdx.json").read_bytes()
    assert artifact["layers"][0]["digest"] == "sha256:" + hashlib.sha256(sbom).hexdigest()

    # Again: only HEAD requests, nothing uploaded, and it says so.
    before = len(registry.requests())
    again = push(registry, single.folder, ref, env=env, cache=tmp_path / "c")
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert "nothing to upload" in again.stderr
    as_json = push(registry, single.folder, ref, "--json", env=env, cache=tmp_path / "c")
    assert json.loads(as_json.stdout) == {"ok": True, "pushed": [{
        "reference": ref, "digest": single.digest, "pinned": f"{ref}@{single.digest}", "uploaded": 0,
        "mounted": 0, "present": 5, "bytes_uploaded": 0, "manifests_sent": 0,
        "referrers": "tag sha256-" + single.digest[7:]}]}
    assert {m for m, _, _ in registry.requests()[before:]} == {"HEAD", "GET"}
    print(f"push of the minirootfs image: {took:.2f} s")


def shipped_child(folder: Path, mirror: str, key: SigningKey, shipped: str) -> Path:
    """``profiles/<shipped>.yaml`` pointed at the test mirror and trusting the test key."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "release-key.asc").write_bytes(key.public_armored)
    path = folder / f"{shipped}.yaml"
    path.write_text(yaml.safe_dump({
        "name": shipped, "extends": os.fspath(REPO / "profiles" / f"{shipped}.yaml"),
        "mirror": mirror, "trust": {"fingerprint": key.fingerprint, "key": "release-key.asc"}}))
    return path


def test_publish_the_shipped_multi_arch_profile_and_pull_it_by_digest(
        tmp_path: Path, registry: Registry, real_mirror: str, signing_key: SigningKey) -> None:
    """``publish`` builds profiles/container.yaml (amd64 + arm64) and pushes it under two tags
    and to a second repository, which gets every blob by a cross-repository mount."""
    profile = shipped_child(tmp_path / "p", real_mirror, signing_key, "container")
    env = {"ALPINE_COMPOSER_REGISTRY_USER": USER, "ALPINE_COMPOSER_REGISTRY_PASSWORD": PASSWORD}
    refs = [f"{registry.host}/fleet/base:3.20", f"{registry.host}/fleet/base:2024-09",
            f"{registry.host}/other/base:3.20"]
    before = len(registry.requests())
    result = run_cli("publish", profile, *refs, "--output-dir", tmp_path / "out", "--cache-dir",
                     tmp_path / "cache", "--ca-cert", str(registry.ca), env=env)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "out" / "container" / "manifest.json").read_text())
    digest = next(o["digest"] for o in record["outputs"] if o["path"] == "oci/index.json")
    multi = Built(tmp_path / "out" / "container", digest)
    assert result.stdout.splitlines() == [f"{digest}  {r}@{digest}" for r in refs]
    index_bytes = multi.blob(digest)
    for ref in refs:
        assert raw(registry, ref) == index_bytes
    seen = registry.requests()[before:]
    other = [r for r in seen if r[1].startswith("/v2/other/base/blobs/uploads/")]
    assert other and all("mount=" in uri and status == 201 for _, uri, status in other), other
    assert not any(m == "PATCH" or (m == "PUT" and "/blobs/" in uri) for m, uri, _ in seen
                   if uri.startswith("/v2/other/"))

    pulled = tmp_path / "arm"
    copied = skopeo(registry, "copy", f"docker://{registry.host}/fleet/base@{digest}",
                    f"oci:{pulled}:x", override_arch="arm64")
    assert copied.returncode == 0, copied.stderr
    index = json.loads(index_bytes)
    arm = next(m for m in index["manifests"] if m["platform"]["architecture"] == "arm64")
    local_arm = json.loads(multi.blob(arm["digest"]))
    got = json.loads((pulled / "index.json").read_text())["manifests"][0]
    assert got["digest"] == arm["digest"]
    remote = json.loads((pulled / "blobs" / "sha256" / got["digest"][7:]).read_bytes())
    assert [x["digest"] for x in remote["layers"]] == [x["digest"] for x in local_arm["layers"]]
    assert len(remote["layers"]) == 2  # the minirootfs, then the overlay's motd
    for arch in ("amd64", "arm64"):  # each platform's SBOMs, by the referrers tag fallback
        platform = next(m for m in index["manifests"] if m["platform"]["architecture"] == arch)
        referrers = json.loads(raw(registry, f"{registry.host}/fleet/base:sha256-{platform['digest'][7:]}"))
        assert len(referrers["manifests"]) == 2


def test_wrong_or_missing_credentials(tmp_path: Path, registry: Registry, single: Built) -> None:
    ref = f"{registry.host}/team/denied:1"
    wrong = push(registry, single.folder, ref, env={"ALPINE_COMPOSER_REGISTRY_USER": USER,
                                                    "ALPINE_COMPOSER_REGISTRY_PASSWORD": "nope"})
    assert wrong.returncode == 3, wrong.stderr
    line = wrong.stderr.strip().splitlines()[-1]
    assert line.startswith(f"alpine-composer: error: {registry.host}/team/denied: checking ")
    assert "HTTP 401 unauthorized" in line and "user 'alice'" in line, line
    nobody = push(registry, single.folder, ref, env={"HOME": str(tmp_path), "DOCKER_CONFIG": str(tmp_path)})
    assert nobody.returncode == 3
    assert "no credentials found" in nobody.stderr


def test_tls_is_verified(tmp_path: Path, registry: Registry, single: Built) -> None:
    env = {"ALPINE_COMPOSER_REGISTRY_USER": USER, "ALPINE_COMPOSER_REGISTRY_PASSWORD": PASSWORD}
    result = run_cli("push", single.folder, f"{registry.host}/team/tls:1", "--retries", "0", env=env)
    assert result.returncode == 3
    assert "TLS failed (certificate verify failed)" in result.stderr and "--ca-cert" in result.stderr


def test_stopped_registry(tmp_path: Path, single: Built) -> None:
    with run_registry(tmp_path / "gone", users={USER: PASSWORD}) as reg:
        reg.stop()
        env = {"ALPINE_COMPOSER_REGISTRY_USER": USER, "ALPINE_COMPOSER_REGISTRY_PASSWORD": PASSWORD}
        result = run_cli("push", single.folder, f"{reg.host}/team/x:1", "--ca-cert", str(reg.ca),
                         "--retries", "1", "--retry-delay", "0.05", env=env)
    assert result.returncode == 3
    last = result.stderr.strip().splitlines()[-1]
    assert f"{reg.host}/team/x: checking " in last and "connection refused after 2 attempts" in last


@pytest.mark.parametrize("cut", ["mid-chunk", "between-chunks"])
def test_reset_mid_upload_is_retried(tmp_path: Path, single: Built, cut: str) -> None:
    """Cut inside a chunk, distribution drops the upload session: a new upload starts. Cut
    before a chunk reaches it, the upload resumes where the registry says it stands."""
    with run_registry(tmp_path / "plain", tls=False) as reg:
        proxy = CuttingProxy(reg.host, cut_after=1_500_000) if cut == "mid-chunk" \
            else CuttingProxy(reg.host, cut_patch=3)
        try:
            ref = f"{proxy.host}/team/mini:1"
            result = run_cli("push", single.folder, ref, "--insecure", "--chunk-size", "512K",
                             "--retry-delay", "0.05")
        finally:
            proxy.close()
        assert proxy.cuts == 1
        assert result.returncode == 0, result.stderr
        assert "connection reset" in result.stderr and "retrying" in result.stderr
        direct = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                                 f"docker://{reg.host}/team/mini:1"], capture_output=True, timeout=60)
        assert direct.stdout == single.blob(single.digest)
        layer = json.loads(single.blob(single.digest))["layers"][0]
        chunks = -(-layer["size"] // (512 * 1024))
        patches = [r for r in reg.requests() if r[0] == "PATCH"]
        if cut == "between-chunks":
            assert "resuming at byte 1048576" in result.stderr
            assert len(patches) == chunks  # nothing sent twice
        else:
            assert len(patches) > chunks


def test_corrupt_blob_is_refused_by_the_registry(tmp_path: Path, registry: Registry,
                                                  single: Built) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(single.folder, copy)
    manifest = json.loads(single.blob(single.digest))
    config = copy / "oci" / "blobs" / "sha256" / manifest["config"]["digest"][7:]
    data = bytearray(config.read_bytes())
    data[-2] ^= 1
    config.write_bytes(bytes(data))
    env = {"ALPINE_COMPOSER_REGISTRY_USER": USER, "ALPINE_COMPOSER_REGISTRY_PASSWORD": PASSWORD}
    result = push(registry, copy, f"{registry.host}/team/corrupt:1", env=env)
    assert result.returncode == 4, result.stderr
    assert "digest mismatch" in result.stderr and config.name in result.stderr
    assert f"{registry.host}/team/corrupt" in result.stderr
    tags = skopeo(registry, "list-tags", f"docker://{registry.host}/team/corrupt")
    assert '"1"' not in tags.stdout  # no tag points at the incomplete image


def layered_profile(work: Path, mirror: str, key: SigningKey, name: str, motd: str,
                    layering: str = "stages") -> Path:
    return write_profile(work / f"p-{name}", mirror_url=mirror, key=key, name=name,
                         overlay={"files": [{"path": "/etc/motd", "content": motd}],
                                  "remove": ["/etc/issue"]},
                         accounts={"users": [{"name": "app", "uid": 1500}]},
                         outputs=[{"format": "oci", "tag": "1", "layering": layering}])


def test_layered_images_share_the_base_layer_in_the_registry(
        tmp_path: Path, registry: Registry, real_mirror: str, signing_key: SigningKey,
        single: Built) -> None:
    first = build_profile(layered_profile(tmp_path, real_mirror, signing_key, "web", "web\n"),
                          tmp_path / "out", tmp_path / "cache")
    second = build_profile(layered_profile(tmp_path, real_mirror, signing_key, "api", "api\n"),
                           tmp_path / "out", tmp_path / "cache")
    flat = build_profile(layered_profile(tmp_path, real_mirror, signing_key, "flat", "web\n",
                                         layering="single"), tmp_path / "out", tmp_path / "cache")
    layers = [[x["digest"] for x in json.loads(b.blob(b.digest))["layers"]] for b in (first, second)]
    plain = json.loads(single.blob(single.digest))["layers"][0]["digest"]
    assert len(layers[0]) == len(layers[1]) == 2  # base, then accounts + overlay (no packages)
    assert layers[0][0] == layers[1][0] == plain  # the base layer is the plain minirootfs image's layer
    assert layers[0][1] != layers[1][1]
    assert run_cli("verify", first.folder).returncode == 0

    # The layered image unpacks to the same files as the single-layer build of the profile.
    if shutil.which("umoci") is not None:
        trees = []
        for built in (first, flat):
            bundle = tmp_path / f"bundle-{built.folder.name}"
            done = subprocess.run(["umoci", "unpack", *([] if os.geteuid() == 0 else ["--rootless"]),
                                   "--image", f"{built.layout}:1", str(bundle)],
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            rootfs = bundle / "rootfs"
            trees.append({str(p.relative_to(rootfs)): (p.is_symlink(), os.lstat(p).st_mode,
                                                       p.read_bytes() if p.is_file() and not p.is_symlink()
                                                       else os.readlink(p) if p.is_symlink() else None)
                          for p in rootfs.rglob("*")})
        assert trees[0] == trees[1]
        assert "etc/issue" not in trees[0] and trees[0]["etc/motd"][2] == b"web\n"

    env = {"ALPINE_COMPOSER_REGISTRY_USER": USER, "ALPINE_COMPOSER_REGISTRY_PASSWORD": PASSWORD}
    cache = tmp_path / "c"
    assert push(registry, first.folder, f"{registry.host}/fleet/web:1", env=env, cache=cache).returncode == 0
    before = len(registry.requests())
    result = push(registry, second.folder, f"{registry.host}/fleet/api:1", env=env, cache=cache)
    assert result.returncode == 0, result.stderr
    moved = registry.requests()[before:]
    uploaded = {uri.split("digest=", 1)[1].replace("%3A", ":") for m, uri, _ in moved
                if m == "PUT" and "/blobs/uploads/" in uri}
    mounted = {uri.split("mount=", 1)[1].split("&", 1)[0].replace("%3A", ":") for m, uri, s in moved
               if m == "POST" and "mount=" in uri and s == 201}
    assert layers[1][0] in mounted and layers[1][0] not in uploaded
    assert layers[1][1] in uploaded
    assert "mounted from other repositories" in result.stderr


def test_bearer_token_auth(tmp_path: Path, single: Built) -> None:
    """distribution's token auth: the token comes from the realm the challenge names, with the
    scopes it names, and a cross-repository mount asks for pull on the source as well."""
    with run_registry(tmp_path / "token", users={USER: PASSWORD}, token=True) as reg:
        assert reg.tokens is not None
        env = {"ALPINE_COMPOSER_REGISTRY_USER": USER, "ALPINE_COMPOSER_REGISTRY_PASSWORD": PASSWORD}
        refs = [f"{reg.host}/team/a:1", f"{reg.host}/team/b:1"]
        result = push(reg, single.folder, *refs, env=env, cache=tmp_path / "c")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [f"{single.digest}  {r}@{single.digest}" for r in refs]
        assert reg.tokens.requests == ["repository:team/a:pull,push", "repository:team/b:pull,push",
                                       "repository:team/b:pull,push repository:team/a:pull"]
        assert "mounted from other repositories" in result.stderr
        wrong = push(reg, single.folder, refs[0], env={**env, "ALPINE_COMPOSER_REGISTRY_PASSWORD": "x"})
    assert wrong.returncode == 3
    assert f"{reg.host}/team/a: checking " in wrong.stderr
    assert "the token server 127.0.0.1:" in wrong.stderr and "refused (HTTP 401)" in wrong.stderr


def test_progress_bars_on_a_terminal(tmp_path: Path, registry: Registry, single: Built) -> None:
    """stderr a terminal (a pty of 100 columns): a tqdm bar per uploaded blob, as for downloads."""
    import fcntl
    import pty
    import struct
    import sys
    import termios
    import threading

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    shown: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            shown.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    env = {**os.environ, "PYTHONPATH": str(REPO), "ALPINE_COMPOSER_REGISTRY_USER": USER,
           "ALPINE_COMPOSER_REGISTRY_PASSWORD": PASSWORD}
    done = subprocess.run([sys.executable, "-m", "composer", "push", single.folder,
                           f"{registry.host}/team/bars:1", "--ca-cert", str(registry.ca),
                           "--chunk-size", "1M"], stdout=subprocess.PIPE, stderr=slave, env=env,
                          timeout=120)
    os.close(slave)
    reader.join(10)
    os.close(master)
    text = b"".join(shown)
    assert done.returncode == 0, text
    layer = json.loads(single.blob(single.digest))["layers"][0]["digest"]
    assert re.search(rb"\rlayer " + layer[7:19].encode() + rb": +[0-9]+%\|.*\| [0-9.]+[kM]?/3\.[0-9]+M \[",
                     text), text
