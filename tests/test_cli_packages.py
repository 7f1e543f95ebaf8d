"""Packages end to end: profile → signed index → resolve → verified .apk → tree → tar."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from tests.conftest import require_shared, run_cli, write_profile
from tests.helpers.apkrepo import FileSpec, PackageSpec, SymlinkSpec, build_repository
from tests.helpers.apkrepo import signing_key as apk_signing_key
from tests.helpers.gpg import SigningKey
from tests.helpers.httpserver import serve_directory
from tests.helpers.mirror import MirrorInfo

FAST = ("--retries", "1", "--retry-delay", "0.01")

HELLO = [
    PackageSpec(name="libhello", version="1.0-r0", depends=("so:libc.musl-x86_64.so.1",),
                provides=("so:libhello.so.1=1",),
                files={"usr/lib/libhello.so.1": FileSpec(b"\x7fELF hello lib", mode=0o755)}),
    PackageSpec(name="hello", version="2.1-r3", depends=("so:libhello.so.1",),
                files={"usr/bin/hello": FileSpec(b"#!/bin/sh\necho hello\n", mode=0o755),
                       "usr/bin/hi": SymlinkSpec("hello"),
                       "etc/hello.conf": FileSpec(b"greeting=hi\n", mode=0o640, gid=101)},
                scripts={".pre-install": b"#!/bin/sh\naddgroup -S hello 2>/dev/null\n"
                                         b"adduser -S -D -H -h /var/lib/hello -s /sbin/nologin "
                                         b"-G hello -g hello hello 2>/dev/null\nexit 0\n"}),
    PackageSpec(name="musl", version="1.2.4-r0", provides=("so:libc.musl-x86_64.so.1=1",),
                files={"lib/ld-musl-x86_64.so.1": FileSpec(b"\x7fELF musl", mode=0o755)}),
    PackageSpec(name="hello-doc", version="2.1-r3", install_if=("hello=2.1-r3", "docs"),
                files={"usr/share/doc/hello/README": b"docs\n"}),
]


@pytest.fixture
def mirror(tmp_path: Path, signing_key: SigningKey) -> MirrorInfo:
    """The standard test minirootfs, but with an empty /etc/apk/world: it has no apk
    database, so its own world could never be satisfied from the test repository."""
    from tests.helpers.mirror import build_mirror, minirootfs_without_world

    return build_mirror(tmp_path / "mirror", key=signing_key, tarball=minirootfs_without_world())


def repo_profile(tmp_path: Path, mirror: MirrorInfo, key: SigningKey, repo_url: str,
                 packages: list[str], **fields: object) -> Path:
    folder = tmp_path / "p"
    folder.mkdir(parents=True, exist_ok=True)
    apk_key = apk_signing_key()
    (folder / apk_key.name).write_bytes(apk_key.public_pem)
    return write_profile(folder, mirror_url=mirror.file_url, key=key, name="pk",
                         packages=packages, repositories=[repo_url],
                         keys=[{"file": apk_key.name, "sha256": apk_key.public_sha256}],
                         outputs=[{"format": "tar", "compression": "none"}], **fields)


def tar_members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tf:
        return {m.name: m for m in tf}


def read_member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tf:
        return tf.extractfile(name).read()  # type: ignore[union-attr]


def test_packages_over_http_with_accounts_and_warm_rebuild(
        tmp_path: Path, mirror: MirrorInfo, signing_key: SigningKey) -> None:
    repo = build_repository(tmp_path / "repo", HELLO, apk_signing_key())
    with serve_directory(repo) as server:
        profile = repo_profile(tmp_path, mirror, signing_key, server.url, ["hello"],
                               accounts={"users": [{"name": "ops", "uid": 1200}]})
        out, cache = tmp_path / "out", tmp_path / "cache"
        result = run_cli("build", profile, "--output-dir", out, "--cache-dir", cache)
        assert result.returncode == 0, result.stderr
        first_requests = len(server.requests)
        again = run_cli("build", profile, "--output-dir", tmp_path / "out2", "--cache-dir", cache)
        assert again.returncode == 0, again.stderr
        assert len(server.requests) == first_requests  # warm rebuild: no network I/O at all
    tar = out / "pk" / "pk-3.20.3-x86_64.tar"
    assert tar.read_bytes() == (tmp_path / "out2" / "pk" / "pk-3.20.3-x86_64.tar").read_bytes()
    members = tar_members(tar)
    assert members["./usr/bin/hello"].mode == 0o755
    assert members["./usr/bin/hi"].linkname == "hello"
    assert (members["./etc/hello.conf"].mode, members["./etc/hello.conf"].gid) == (0o640, 101)
    assert "./usr/share/doc/hello/README" not in members  # install_if needs 'docs' too
    passwd = read_member(tar, "./etc/passwd").decode()
    assert "hello:x:" in passwd and ":/var/lib/hello:/sbin/nologin" in passwd
    assert "ops:x:1200:" in passwd
    db = read_member(tar, "./lib/apk/db/installed").decode()
    assert "P:hello\nV:2.1-r3\n" in db and "P:libhello\n" in db and "R:hello\n" in db
    world = read_member(tar, "./etc/apk/world").decode().split()
    assert "hello" in world
    manifest = json.loads((out / "pk" / "manifest.json").read_text())
    assert manifest["packages"]["x86_64"] == ["hello-2.1-r3", "libhello-1.0-r0", "musl-1.2.4-r0"] \
        or sorted(manifest["packages"]["x86_64"]) == ["hello-2.1-r3", "libhello-1.0-r0",
                                                      "musl-1.2.4-r0"]
    kinds = {i["kind"] for i in manifest["inputs"]}
    assert {"apkindex", "package", "minirootfs", "release-key"} <= kinds
    scripts = [s for s in manifest["scripts_not_run"] if s["package"] == "hello-2.1-r3"]
    assert scripts and scripts[0]["script"] == "pre-install"
    assert any("adduser" in e or "user hello" in e for e in scripts[0]["effects"])
    spdx = json.loads((out / "pk" / "pk-3.20.3-x86_64.spdx.json").read_text())
    purls = {r["referenceLocator"] for p in spdx["packages"] for r in p.get("externalRefs", [])}
    assert "pkg:apk/alpine/hello@2.1-r3?arch=x86_64&distro=alpine-3.20.3" in purls

    offline = run_cli("build", profile, "--offline", "--output-dir", tmp_path / "out3",
                      "--cache-dir", cache)
    assert offline.returncode == 0, offline.stderr  # the server is gone: cache only


@pytest.mark.parametrize(("case", "code", "expected"), [
    ("unknown-key", 4, "signed by unknown key"),
    ("checksum", 4, "bytes, but the index says"),
    ("same-size", 4, "control checksum mismatch"),
    ("unsatisfiable", 6, "no package provides 'nosuch' (required by world)"),
    ("conflict", 6, "usr/bin/hello"),
    ("pin", 4, "is pinned"),
])
def test_hostile_repositories(tmp_path: Path, mirror: MirrorInfo, signing_key: SigningKey,
                              case: str, code: int, expected: str) -> None:
    key = apk_signing_key()
    specs = list(HELLO)
    packages = ["hello"]
    substitute = None
    index_key = None
    if case == "unknown-key":
        index_key = apk_signing_key("stranger")
    elif case == "checksum":
        other = PackageSpec(name="hello", version="2.1-r3", files={"usr/bin/hello": b"evil"})
        from tests.helpers.apkrepo import build_apk
        substitute = {"hello-2.1-r3": build_apk(other, key)}
    elif case == "same-size":
        # A different, validly signed package of exactly the same size: only the index
        # checksum can tell them apart. Search deterministically for such a variant.
        from dataclasses import replace

        from tests.helpers.apkrepo import build_apk
        size = len(build_apk(specs[1], key))
        for n in range(1, 3000):
            evil = build_apk(replace(specs[1], builddate=specs[1].builddate - n), key)
            if len(evil) == size:
                break
        else:
            pytest.fail("no same-size variant found")
        substitute = {"hello-2.1-r3": evil}
    elif case == "unsatisfiable":
        packages = ["hello", "nosuch"]
    elif case == "conflict":
        specs.append(PackageSpec(name="hello-fork", version="1.0-r0",
                                 files={"usr/bin/hello": b"other"}))
        packages = ["hello", "hello-fork"]
    repo = build_repository(tmp_path / "repo", specs, key, substitute=substitute,
                            index_key=index_key)
    profile = repo_profile(tmp_path, mirror, signing_key, repo.resolve().as_uri(), packages)
    if case == "pin":
        data = profile.read_text().replace(key.public_sha256, "f" * 64)
        profile.write_text(data)
    out, cache = tmp_path / "out", tmp_path / "cache"
    result = run_cli("build", profile, "--output-dir", out, "--cache-dir", cache, *FAST)
    assert result.returncode == code, result.stderr
    line = result.stderr.splitlines()[-1]
    assert line.startswith("alpine-composer: error: ") and expected in line
    assert not out.exists() or list(out.iterdir()) == []
    blobs = cache / "blobs" / "sha256"
    if blobs.exists():
        for blob in blobs.iterdir():
            assert not blob.read_bytes().startswith(b"\x1f\x8b") or case not in ("checksum",) \
                or b"evil" not in io.BytesIO(blob.read_bytes()).getvalue()


def test_packages_only_bootstrap_from_real_repository(tmp_path: Path) -> None:
    fixtures = require_shared()
    folder = tmp_path / "p"
    folder.mkdir()
    profile = folder / "bootstrap.yaml"
    profile.write_text(json.dumps({
        "name": "boot", "base": "packages", "branch": "v3.19",
        "packages": ["alpine-baselayout", "alpine-keys", "apk-tools", "busybox", "libc-utils"],
        "repositories": [(fixtures / "iso-3.19.1-x86_64" / "apks").as_uri()],
        "keys": [{"file": str(fixtures / "apk-keys" /
                              "alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub"),
                  "sha256": "207e4696d3c05f7cb05966aee557307151f1f00217af4143c1bcaf33b8df733f"}],
        "outputs": [{"format": "tar", "compression": "gzip"}],
    }))
    out = tmp_path / "out"
    result = run_cli("build", profile, "--output-dir", out, "--cache-dir", tmp_path / "c")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "boot" / "manifest.json").read_text())
    assert sorted(manifest["packages"]["x86_64"]) == sorted([
        "alpine-baselayout-3.4.3-r2", "alpine-baselayout-data-3.4.3-r2", "alpine-keys-2.4-r1",
        "apk-tools-2.14.0-r5", "busybox-1.36.1-r15", "busybox-binsh-1.36.1-r15",
        "ca-certificates-bundle-20230506-r0", "libc-utils-0.7.2-r5", "libcrypto3-3.1.4-r5",
        "libssl3-3.1.4-r5", "musl-1.2.4_git20230717-r4", "musl-utils-1.2.4_git20230717-r4",
        "scanelf-1.3.7-r2", "ssl_client-1.36.1-r15", "zlib-1.3.1-r0"])
    tar = out / "boot" / "boot-v3.19-x86_64.tar.gz"
    members = tar_members(tar)
    assert members["./bin/sh"].linkname == "/bin/busybox"
    assert members["./bin/busybox"].mode == 0o755
    assert members["./bin/ls"].linkname == "/bin/busybox"  # applet links, as busybox --install -s
    again = run_cli("build", profile, "--output-dir", tmp_path / "out2", "--cache-dir", tmp_path / "c")
    assert again.returncode == 0
    assert tar.read_bytes() == (tmp_path / "out2" / "boot" / tar.name).read_bytes()


EVIL = PackageSpec(name="hello", version="2.1-r3", files={"usr/bin/hello": b"hi"})


def _hand_built_repository(root: Path, built: list, key, *,  # type: ignore[no-untyped-def]
                           corrupt_index: bool = False,
                           bodies: dict[str, bytes] | None = None) -> Path:
    from tests.helpers.apkrepo import build_index, format_index_text

    arch_dir = root / "x86_64"
    arch_dir.mkdir(parents=True)
    for pkg in built:
        (arch_dir / pkg.spec.file_name).write_bytes((bodies or {}).get(pkg.spec.name, pkg.data))
    (arch_dir / "APKINDEX.tar.gz").write_bytes(
        build_index(format_index_text(built), key, corrupt_signature=corrupt_index))
    return root


@pytest.mark.parametrize(("case", "code", "expected"), [
    ("bad-index-signature", 4, "bad signature by composer-test-main.rsa.pub"),
    ("datahash", 4, "hello-2.1-r3 (file://"),
    ("other-key", 4, "hello-2.1-r3"),
    ("truncated", 4, "bytes, but the index says"),
    ("dotdot", 5, "data: member '../evil' contains '..'"),
    ("absolute", 5, "data: member '/etc/passwd' is absolute"),
    ("symlink-escape", 5, "data: symlink 'usr/lib/x' -> '../../../../etc/shadow' escapes the root"),
])
def test_hostile_packages(tmp_path: Path, mirror: MirrorInfo, signing_key: SigningKey,
                          case: str, code: int, expected: str) -> None:
    from tests.helpers.apkrepo import build_package

    key = apk_signing_key()
    spec, options, bodies = EVIL, {}, None
    if case == "datahash":
        options = {"datahash": "ab" * 32}
    elif case == "dotdot":
        spec = PackageSpec(name="hello", version="2.1-r3", files={"../evil": b"x"})
    elif case == "absolute":
        spec = PackageSpec(name="hello", version="2.1-r3", files={"/etc/passwd": b"r::0:0::/:/\n"})
    elif case == "symlink-escape":
        spec = PackageSpec(name="hello", version="2.1-r3",
                           files={"usr/lib/x": SymlinkSpec("../../../../etc/shadow")})
    built = build_package(spec, apk_signing_key("stranger") if case == "other-key" else key,
                          **options)  # type: ignore[arg-type]
    if case == "truncated":
        bodies = {"hello": built.data[:-100]}
    repo = _hand_built_repository(tmp_path / "repo", [built], key,
                                  corrupt_index=case == "bad-index-signature", bodies=bodies)
    profile = repo_profile(tmp_path, mirror, signing_key, repo.resolve().as_uri(), ["hello"])
    out, cache = tmp_path / "out", tmp_path / "cache"
    result = run_cli("build", profile, "--output-dir", out, "--cache-dir", cache, *FAST)
    assert result.returncode == code, result.stderr
    line = result.stderr.splitlines()[-1]
    assert line.startswith("alpine-composer: error: ") and expected in line, line
    assert not out.exists() or list(out.iterdir()) == []
    package_file = repo / "x86_64" / spec.file_name
    digest = hashlib.sha256(package_file.read_bytes()).hexdigest()
    if case != "bad-index-signature" and code == 4:
        assert not (cache / "blobs" / "sha256" / digest).exists()  # never cached unverified


@pytest.mark.parametrize("how", ["mtime", "deflate"])
def test_damaged_cached_package_is_fetched_again(
        tmp_path: Path, mirror: MirrorInfo, signing_key: SigningKey, how: str) -> None:
    from composer.apk.package import verify_apk

    key = apk_signing_key()
    repo = build_repository(tmp_path / "repo", HELLO, key)
    with serve_directory(repo) as server:
        profile = repo_profile(tmp_path, mirror, signing_key, server.url, ["hello"])
        cache = tmp_path / "cache"
        first = run_cli("build", profile, "--output-dir", tmp_path / "out", "--cache-dir", cache)
        assert first.returncode == 0, first.stderr
        hello = (repo / "x86_64" / "hello-2.1-r3.apk").read_bytes()
        blob = cache / "blobs" / "sha256" / hashlib.sha256(hello).hexdigest()
        start = verify_apk(hello, key.trusted(), source="repo").data_offset
        damaged = bytearray(hello)
        if how == "mtime":
            damaged[start + 4] ^= 1  # still inflates: only the data hash can tell
        else:
            damaged[start + 12:start + 40] = bytes(28)
        blob.chmod(0o644)
        blob.write_bytes(bytes(damaged))

        offline = run_cli("build", profile, "--offline", "--output-dir", tmp_path / "off",
                          "--cache-dir", cache)
        assert offline.returncode == 3, offline.stderr
        assert offline.stderr.splitlines()[-1] == (
            f"alpine-composer: error: package hello-2.1-r3: the cache file {blob} is damaged (its "
            "data does not match the signed data hash) and was removed; run once without "
            "--offline to fetch it again")
        assert not blob.exists()
        assert not (tmp_path / "off").exists() or list((tmp_path / "off").iterdir()) == []

        fetched = server.count("x86_64/hello-2.1-r3.apk")
        again = run_cli("build", profile, "--output-dir", tmp_path / "out2", "--cache-dir", cache)
        assert again.returncode == 0, again.stderr
        assert server.count("x86_64/hello-2.1-r3.apk") == fetched + 1
    assert blob.read_bytes() == hello  # the cache holds the good copy again
    tar = "pk/pk-3.20.3-x86_64.tar"
    assert (tmp_path / "out" / tar).read_bytes() == (tmp_path / "out2" / tar).read_bytes()


def test_what_the_image_names_its_repositories(tmp_path: Path) -> None:
    """Issue 14 item 8: a private repository says what the image calls it, or stays out of
    the image; the manifest names key files as the profile wrote them, not by host path."""
    fixtures = require_shared()
    folder = tmp_path / "p"
    folder.mkdir()
    key_name = "alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub"
    (folder / key_name).write_bytes((fixtures / "apk-keys" / key_name).read_bytes())
    real = (fixtures / "iso-3.19.1-x86_64" / "apks").as_uri()
    local = tmp_path / "local-copy"
    shutil.copytree(fixtures / "iso-3.19.1-x86_64" / "apks", local)
    profile = folder / "named.yaml"
    profile.write_text(json.dumps({
        "name": "named", "base": "packages", "branch": "v3.19",
        "packages": ["alpine-baselayout", "alpine-keys", "apk-tools", "busybox", "libc-utils"],
        "repositories": [{"url": real, "image_url": "https://pkgs.example.org/alpine/v3.19/main"},
                         {"url": local.as_uri(), "in_image": False}],
        "keys": [{"file": key_name,
                  "sha256": "207e4696d3c05f7cb05966aee557307151f1f00217af4143c1bcaf33b8df733f"}],
        "outputs": [{"format": "tar", "compression": "none"}],
    }))
    out = tmp_path / "out"
    result = run_cli("build", profile, "--output-dir", out, "--cache-dir", tmp_path / "c")
    assert result.returncode == 0, result.stderr
    tar = out / "named" / "named-v3.19-x86_64.tar"
    assert read_member(tar, "./etc/apk/repositories") == \
        b"https://pkgs.example.org/alpine/v3.19/main\n"
    inputs = json.loads((out / "named" / "manifest.json").read_text())["inputs"]
    keys = [i for i in inputs if i["name"].endswith(".rsa.pub")]
    assert [(k["name"], k.get("url")) for k in keys] == [(key_name, None)]
    assert not [i for i in inputs if i.get("url", "").endswith(".rsa.pub")]
