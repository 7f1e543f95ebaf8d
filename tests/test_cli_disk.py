"""Issue 17 through the CLI, on Alpine's real 3.19.1 packages and linux-virt kernel: disk
images are byte-reproducible across folders, time zones, umasks and caches, and bad settings
are refused with one line before anything is written."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, require_shared, run_cli
from tests.helpers.alpine_virt import AlpineVirtRepositories, alpine_virt_repositories
from tests.helpers.apkrepo import signing_key
from tests.helpers.bootpkgs import Unavailable, host_dmsetup_package
from tests.helpers.hostzlib import build_with_both_zlibs
from tests.helpers.httpserver import serve_directory
from tests.helpers.sbkeys import make_identity

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> AlpineVirtRepositories:
    fixtures = require_shared()
    try:
        dmsetup = host_dmsetup_package()
    except Unavailable as exc:
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("disk-repos")
    return alpine_virt_repositories(fixtures, root / "boot-repo", signing_key("boot"),
                                    extra=[dmsetup])


def _profile(repos: AlpineVirtRepositories, folder: Path, outputs: list[dict[str, Any]],
             **extra: Any) -> Path:
    fields = repos.profile_fields(folder)
    profile = folder / "disk.yaml"
    profile.write_text(json.dumps({"name": "disk",
                                   "extends": os.fspath(REPO / "profiles" / "virt-disk.yaml"),
                                   **fields, "outputs": outputs, **extra}))
    return profile


def test_two_builds_give_identical_raw_and_qcow2_bytes(repos: AlpineVirtRepositories,
                                                        tmp_path: Path) -> None:
    outputs = [{"format": "disk"}, {"format": "disk", "image": "qcow2"}]
    digests = []
    for index, (tz, umask) in enumerate((("UTC", 0o022), ("Asia/Kolkata", 0o077))):
        folder = tmp_path / f"build{index}" / ("nested/deeper" if index else "")
        profile = _profile(repos, folder / "profile", outputs)
        built = run_cli("build", profile, "--output-dir", folder / "out", "--cache-dir",
                        folder / "cache", env={"TZ": tz}, umask=umask)
        assert built.returncode == 0, built.stderr
        out = folder / "out" / "disk"
        files = sorted(p.name for p in out.iterdir())
        assert "disk-3.19.1-x86_64.img" in files and "disk-3.19.1-x86_64.qcow2" in files
        digests.append({name: (out / name).read_bytes() for name in
                        ("disk-3.19.1-x86_64.img", "disk-3.19.1-x86_64.qcow2", "manifest.json")})
    assert digests[0]["disk-3.19.1-x86_64.img"] == digests[1]["disk-3.19.1-x86_64.img"]
    assert digests[0]["disk-3.19.1-x86_64.qcow2"] == digests[1]["disk-3.19.1-x86_64.qcow2"]
    manifest = json.loads(digests[0]["manifest.json"])
    formats = {o["path"]: o["format"] for o in manifest["outputs"]}
    assert formats["disk-3.19.1-x86_64.img"] == "disk"
    assert formats["disk-3.19.1-x86_64.qcow2"] == "disk"


def test_disk_bytes_do_not_depend_on_the_hosts_zlib(repos: AlpineVirtRepositories,
                                                    tmp_path: Path) -> None:
    """Issue 15 for disks: the squashfs root and the initramfs inside the UKI are deflated by
    the pinned compressor, so a host whose ``zlib`` is zlib-ng (Fedora, RHEL 10) builds the
    same raw and qcow2 images, byte for byte."""
    profile = _profile(repos, tmp_path / "profile",
                       [{"format": "disk"}, {"format": "disk", "image": "qcow2"}])
    host, swapped = build_with_both_zlibs(profile, "disk", tmp_path, timeout=600)
    assert {"disk-3.19.1-x86_64.img", "disk-3.19.1-x86_64.qcow2", "manifest.json"} <= set(host)
    assert sorted(swapped) == sorted(host)
    assert [name for name in host if host[name] != swapped[name]] == []


def test_disk_bytes_do_not_depend_on_the_mirror_url(repos: AlpineVirtRepositories,
                                                    tmp_path: Path) -> None:
    """The same profile built from a ``file://`` mirror, then with ``--mirror`` over HTTP on
    127.0.0.1 from a copy of it, in another working folder, umask, time zone and cache:
    the raw and qcow2 images are byte-identical; only the manifest's mirror differs."""
    mirror = tmp_path / "mirror"
    shutil.copytree(repos.real, mirror / "v3.19" / "main")
    shutil.copytree(repos.boot, mirror / "v3.19" / "community")
    folder = tmp_path / "profile"
    fields = {**repos.profile_fields(folder), "mirror": mirror.as_uri(),
              "repositories": ["main", "community"]}
    profile = folder / "disk.json"
    profile.write_text(json.dumps({
        "name": "disk", "extends": os.fspath(REPO / "profiles" / "virt-disk.yaml"), **fields,
        "outputs": [{"format": "disk"}, {"format": "disk", "image": "qcow2"}]}))
    from_files = run_cli("build", profile, "--output-dir", tmp_path / "a", "--cache-dir",
                         tmp_path / "cache-a", env={"TZ": "UTC"}, umask=0o022)
    assert from_files.returncode == 0, from_files.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with serve_directory(mirror) as server:
        over_http = run_cli("build", profile, "--mirror", server.url, "--output-dir",
                            tmp_path / "b", "--cache-dir", tmp_path / "cache-b", cwd=elsewhere,
                            env={"TZ": "Asia/Kolkata"}, umask=0o077)
        assert over_http.returncode == 0, over_http.stderr
        assert server.requests, "the second build read nothing over HTTP"
    a, b = tmp_path / "a" / "disk", tmp_path / "b" / "disk"
    for name in ("disk-3.19.1-x86_64.img", "disk-3.19.1-x86_64.qcow2"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    mirrors = [json.loads((d / "manifest.json").read_bytes())["mirror"] for d in (a, b)]
    assert mirrors == [mirror.as_uri(), server.url]


def test_a_size_too_small_for_the_tree_names_the_size_needed(repos: AlpineVirtRepositories,
                                                             tmp_path: Path) -> None:
    profile = _profile(repos, tmp_path / "profile", [{"format": "disk", "size": "16MiB"}])
    result = run_cli("build", profile, "--output-dir", tmp_path / "out", "--cache-dir",
                     tmp_path / "cache")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if not line.startswith("==> ")]
    assert len(errors) == 1, result.stderr
    assert re.fullmatch(rf"alpine-composer: error: {re.escape(str(profile))}: outputs\[0\]: disk: "
                        r"size 16777216 bytes is too small for the partitions; it needs at least "
                        r"\d+ bytes \(\d+ MiB\)", errors[0]), errors[0]
    assert not (tmp_path / "out" / "disk").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == []


@pytest.mark.parametrize(("output", "message"), [
    ({"format": "disk", "cmdline": "console=ttyS0 roothash=00"},
     "outputs[0]: cmdline sets 'roothash=00'; the disk image sets the root and verity "
     "arguments itself"),
    ({"format": "disk", "kernel": "vrit"},
     "outputs[0]: kernel 'vrit' is not one of Alpine's flavors (did you mean 'virt'?)"),
    ({"format": "disk", "data": {"mount": "/etc", "size": "8MiB"}},
     "outputs[0]: data.mount '/etc' would hide a system folder; use a folder of its own such "
     "as /data or /srv"),
    ({"format": "disk", "secure_boot": {"cert": "db.crt"}},
     "secure_boot: give exactly one of key (a PEM file) or key_env (an environment variable "
     "holding the PEM key)"),
])
def test_bad_disk_settings_are_refused_before_any_download(
        repos: AlpineVirtRepositories, tmp_path: Path, output: dict[str, Any],
        message: str) -> None:
    profile = _profile(repos, tmp_path / "profile", [output])
    result = run_cli("build", profile, "--output-dir", tmp_path / "out", "--cache-dir",
                     tmp_path / "cache")
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("==> ")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "installing" not in result.stderr
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.apk"))


def test_a_key_that_does_not_match_its_certificate_is_refused_before_any_download(
        repos: AlpineVirtRepositories, tmp_path: Path) -> None:
    folder = tmp_path / "profile"
    folder.mkdir()
    key, _ = make_identity("one").write(folder, "one")
    _, cert = make_identity("two").write(folder, "two")
    profile = _profile(repos, folder, [{"format": "disk",
                                        "secure_boot": {"key": key.name, "cert": cert.name}}])
    result = run_cli("build", profile, "--output-dir", tmp_path / "out", "--cache-dir",
                     tmp_path / "cache")
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"alpine-composer: error: secure_boot.key {key}: the key does not "
                             f"match the public key of secure_boot.cert {cert}\n")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())

