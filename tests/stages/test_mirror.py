"""Outputs do not depend on the build mirror: the same mirror folder served over real HTTP
on 127.0.0.1 and read as file:// gives the same bytes, and the outputs name the profile's
``image_mirror`` (Alpine's CDN by default); only manifest.json says where bytes came from."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from composer.manifest import SUMS_NAME
from composer.profile.model import DEFAULT_MIRROR, Profile
from composer.stages.pipeline import BuildResult, build
from composer.stages.repositories import repository_sources
from composer.urls import rebase_url
from tests.conftest import write_profile
from tests.helpers.apkrepo import PackageSpec, build_repository
from tests.helpers.apkrepo import signing_key as apk_signing_key
from tests.helpers.gpg import SigningKey
from tests.helpers.httpserver import serve_directory
from tests.helpers.mirror import MirrorInfo, build_mirror, minirootfs_without_world
from tests.stages.conftest import ContextFor
from tests.test_cli_packages import HELLO

TOOLS = [PackageSpec(name="tools", version="1.0-r0",
                     files={"usr/bin/tool": b"#!/bin/sh\necho tool\n"})]
MINIROOTFS_PATH = "v3.20/releases/x86_64/alpine-minirootfs-3.20.3-x86_64.tar.gz"


@pytest.fixture
def full_mirror(tmp_path: Path, signing_key: SigningKey) -> MirrorInfo:
    """One folder with Alpine's layout: the signed release and v3.20's main and community."""
    mirror = build_mirror(tmp_path / "mirror", key=signing_key, tarball=minirootfs_without_world())
    build_repository(mirror.root / "v3.20" / "main", HELLO, apk_signing_key())
    build_repository(mirror.root / "v3.20" / "community", TOOLS, apk_signing_key())
    return mirror


def profile_for(tmp_path: Path, mirror: MirrorInfo, key: SigningKey, **fields: object) -> Path:
    apk_key = apk_signing_key()
    folder = tmp_path / "profile"
    folder.mkdir(exist_ok=True)
    (folder / apk_key.name).write_bytes(apk_key.public_pem)
    return write_profile(folder, mirror_url=mirror.file_url, key=key, name="same",
                         keys=[{"file": apk_key.name, "sha256": apk_key.public_sha256}], **fields)


def build_both(tmp_path: Path, mirror: MirrorInfo, profile: Path,
               context_for: ContextFor) -> tuple[BuildResult, BuildResult, str]:
    """The profile built from its file:// mirror, then from the same folder over HTTP
    (``--mirror``'s override), each with a cache of its own."""
    via_file = build(context_for(profile, output_dir=tmp_path / "out-file",
                                 cache_dir=tmp_path / "cache-file"))
    with serve_directory(mirror.root) as server:
        via_http = build(context_for(profile, overrides={"mirror": server.url},
                                     output_dir=tmp_path / "out-http",
                                     cache_dir=tmp_path / "cache-http"))
        assert server.count("v3.20/main/x86_64/APKINDEX.tar.gz") == 1
    return via_file, via_http, server.url


def assert_same_artifacts(one: BuildResult, two: BuildResult) -> list[str]:
    """Every artifact SHA256SUMS lists is byte-identical in both folders; returns the list."""
    sums = (one.output_dir / SUMS_NAME).read_bytes()
    assert sums == (two.output_dir / SUMS_NAME).read_bytes()
    names = [line.split("  ", 1)[1] for line in sums.decode().splitlines()]
    for name in names:
        assert (one.output_dir / name).read_bytes() == (two.output_dir / name).read_bytes(), name
    return names


def tar_member(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return member.read()


def test_image_outputs_do_not_depend_on_the_mirror(tmp_path: Path, full_mirror: MirrorInfo,
                                                   signing_key: SigningKey,
                                                   context_for: ContextFor) -> None:
    profile = profile_for(
        tmp_path, full_mirror, signing_key, packages=["hello", "tools@extra"],
        repositories=["main", "@extra community"],
        outputs=[{"format": "tar", "compression": "gzip"}, {"format": "oci"},
                 {"format": "oci-archive"}, {"format": "docker-archive"}])
    via_file, via_http, http_url = build_both(tmp_path, full_mirror, profile, context_for)

    names = assert_same_artifacts(via_file, via_http)
    assert {"same-3.20.3-x86_64.tar.gz", "same-3.20.3.oci.tar", "same-3.20.3-x86_64.docker.tar",
            "same-3.20.3-x86_64.spdx.json", "same-3.20.3-x86_64.cdx.json",
            "oci/index.json"} <= set(names)
    cdn_tarball = f"{DEFAULT_MIRROR}/{MINIROOTFS_PATH}"
    out = via_http.output_dir
    rootfs = (out / "same-3.20.3-x86_64.tar.gz").read_bytes()
    assert tar_member(rootfs, "./etc/apk/repositories") == (
        f"{DEFAULT_MIRROR}/v3.20/main\n@extra {DEFAULT_MIRROR}/v3.20/community\n").encode()
    index = json.loads((out / "oci" / "index.json").read_bytes())
    manifest_blob = index["manifests"][0]["digest"].split(":", 1)[1]
    image = json.loads((out / "oci" / "blobs" / "sha256" / manifest_blob).read_bytes())
    assert image["annotations"]["org.opencontainers.image.base.name"] == cdn_tarball
    spdx = json.loads((out / "same-3.20.3-x86_64.spdx.json").read_bytes())
    assert [p["downloadLocation"] for p in spdx["packages"] if p["name"].endswith(".tar.gz")] \
        == [cdn_tarball]
    cdx = json.loads((out / "same-3.20.3-x86_64.cdx.json").read_bytes())
    assert [r["url"] for c in cdx["components"] for r in c.get("externalReferences", [])
            if r["type"] == "distribution"] == [cdn_tarball]

    # Only manifest.json says where the bytes came from.
    for result, mirror in ((via_file, full_mirror.file_url), (via_http, http_url)):
        recorded = json.loads((result.output_dir / "manifest.json").read_bytes())
        assert recorded["mirror"] == mirror
        fetched = [i["url"] for i in recorded["inputs"] if i["kind"] in ("minirootfs", "package",
                                                                         "apkindex")]
        assert len(fetched) == 7 and all(url.startswith(mirror + "/") for url in fetched)


@pytest.mark.parametrize("image_mirror", [None, "https://mirror.example.org/alpine/"])
def test_packages_rootfs_names_the_image_mirror(tmp_path: Path, full_mirror: MirrorInfo,
                                                signing_key: SigningKey, context_for: ContextFor,
                                                image_mirror: str | None) -> None:
    fields: dict[str, object] = {"image_mirror": image_mirror} if image_mirror else {}
    profile = profile_for(tmp_path, full_mirror, signing_key, base="packages",
                          packages=["libhello", "tools"],
                          outputs=[{"format": "tar", "compression": "none"}], **fields)
    via_file, via_http, _ = build_both(tmp_path, full_mirror, profile, context_for)

    names = assert_same_artifacts(via_file, via_http)
    assert "same-v3.20-x86_64.tar" in names
    canonical = (image_mirror or DEFAULT_MIRROR).rstrip("/")
    rootfs = (via_http.output_dir / "same-v3.20-x86_64.tar").read_bytes()
    assert tar_member(rootfs, "./etc/apk/repositories") == (
        f"{canonical}/v3.20/main\n{canonical}/v3.20/community\n").encode()


def test_repository_urls_under_the_build_mirror_are_rebased_with_their_tags() -> None:
    profile = Profile.model_validate({
        "name": "r", "mirror": "http://127.0.0.1:8080/alpine",
        "image_mirror": "https://mirror.example.org/alpine",
        "repositories": ["main", "@t community", "http://127.0.0.1:8080/alpine/edge/testing/",
                         {"url": "http://127.0.0.1:8080/alpinex/v3.20/main", "tag": "near"},
                         "@own https://example.org/repo"]})
    sources = repository_sources(profile, "v3.20")
    assert [s.url for s in sources] == [
        "http://127.0.0.1:8080/alpine/v3.20/main", "http://127.0.0.1:8080/alpine/v3.20/community",
        "http://127.0.0.1:8080/alpine/edge/testing", "http://127.0.0.1:8080/alpinex/v3.20/main",
        "https://example.org/repo"]
    assert [s.line for s in sources] == [
        "https://mirror.example.org/alpine/v3.20/main",
        "@t https://mirror.example.org/alpine/v3.20/community",
        "https://mirror.example.org/alpine/edge/testing",
        "@near http://127.0.0.1:8080/alpinex/v3.20/main",
        "@own https://example.org/repo"]


@pytest.mark.parametrize(("url", "expected"), [
    ("file:///srv/m/v3.20/main", "https://cdn/alpine/v3.20/main"),
    ("file:///srv/m", "https://cdn/alpine"),
    ("file:///srv/mirror/v3.20/main", "file:///srv/mirror/v3.20/main"),
    ("https://other/v3.20/main", "https://other/v3.20/main"),
])
def test_rebase_url_moves_only_what_is_under_the_old_base(url: str, expected: str) -> None:
    assert rebase_url(url, "file:///srv/m/", "https://cdn/alpine/") == expected


def test_image_mirror_is_in_the_schema_and_checked() -> None:
    schema = Profile.model_json_schema()["properties"]["image_mirror"]
    assert schema["default"] == DEFAULT_MIRROR and "/etc/apk/repositories" in schema["description"]
    assert Profile.model_validate({"name": "x"}).image_mirror == DEFAULT_MIRROR
    with pytest.raises(ValueError, match="image_mirror\n  Value error, expected an http://, "
                                         "https:// or file:// URL"):
        Profile.model_validate({"name": "x", "image_mirror": "ftp://example.org/alpine"})


def test_a_private_repository_says_what_the_image_names_it(tmp_path: Path,
                                                           full_mirror: MirrorInfo,
                                                           signing_key: SigningKey,
                                                           context_for: ContextFor) -> None:
    """A repository outside the build mirror is written as its ``image_url`` (or left out
    with ``in_image: false``), never under ``image_mirror``; the manifest names the key file
    as the profile wrote it, never by this host's absolute path."""
    private = build_repository(tmp_path / "private" / "main", TOOLS, apk_signing_key())
    staging = build_repository(tmp_path / "staging", HELLO, apk_signing_key())
    profile = profile_for(tmp_path, full_mirror, signing_key, base="packages",
                          packages=["libhello", "tools@own"],
                          outputs=[{"format": "tar", "compression": "none"}],
                          repositories=[
                              "main",
                              {"url": private.as_uri(), "tag": "own",
                               "image_url": "https://pkgs.example.org/alpine/main/"},
                              {"url": staging.as_uri(), "in_image": False}])
    result = build(context_for(profile))
    rootfs = (result.output_dir / "same-v3.20-x86_64.tar").read_bytes()
    assert tar_member(rootfs, "./etc/apk/repositories") == (
        f"{DEFAULT_MIRROR.rstrip('/')}/v3.20/main\n"
        "@own https://pkgs.example.org/alpine/main\n").encode()
    manifest = (result.output_dir / "manifest.json").read_text()
    key_file = profile.parent / apk_signing_key().name
    assert str(key_file) not in manifest and key_file.as_uri() not in manifest
    keys = [i for i in json.loads(manifest)["inputs"] if i["name"] == key_file.name]
    assert [(k["kind"], k.get("url")) for k in keys] == [("metadata", None)]
    with pytest.raises(ValueError, match="give image_url or in_image: false, not both"):
        Profile.model_validate({"name": "x", "repositories": [
            {"url": "https://example.org/r", "image_url": "https://e/r", "in_image": False}]})
