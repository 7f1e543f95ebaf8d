"""The lock → vendor → offline rebuild story for a bootable ISO: the shipped virt profile
against a mirror served over HTTP (the real 3.20.3 minirootfs, Debian's kernel and loaders
wrapped as test-signed Alpine packages)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, require_shared, run_cli
from tests.helpers.apkrepo import PackageSpec, build_repository, signing_key
from tests.helpers.bootpkgs import base_packages
from tests.helpers.gpg import SigningKey
from tests.helpers.httpserver import serve_directory
from tests.helpers.mirror import build_mirror
from tests.test_lock import FAST, artifacts

pytestmark = pytest.mark.slow

KEY = signing_key()


def test_locked_iso_rebuilds_offline_from_a_vendored_mirror(
        tmp_path: Path, signing_key: SigningKey, boot_packages: dict[str, PackageSpec]) -> None:
    real = require_shared() / "minirootfs" / "alpine-minirootfs-3.20.3-x86_64.tar.gz"
    live = tmp_path / "mirror"
    build_mirror(live, key=signing_key, tarball=real.read_bytes())
    build_repository(live / "v3.20" / "main", [*base_packages(), *boot_packages.values()], KEY)
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "release-key.asc").write_bytes(signing_key.public_armored)
    (folder / KEY.name).write_bytes(KEY.public_pem)
    kernel = boot_packages["linux-virt"]
    kernel_apk = f"v3.20/main/x86_64/{kernel.file_name}"
    with serve_directory(live) as server:
        profile = folder / "virt.yaml"
        profile.write_text(yaml.safe_dump({
            "name": "virt", "extends": os.fspath(REPO / "profiles" / "virt.yaml"),
            "mirror": server.url, "repositories": ["main"], "keys": [KEY.name],
            "trust": {"fingerprint": signing_key.fingerprint, "key": "release-key.asc"}}))
        cache = tmp_path / "cache"
        assert run_cli("lock", profile, "--cache-dir", cache, *FAST).returncode == 0
        built = run_cli("build", profile, "--output-dir", tmp_path / "out", "--cache-dir", cache,
                        *FAST)
        assert built.returncode == 0, built.stderr
        first = artifacts(tmp_path / "out" / "virt")
        assert "virt-3.20.3-x86_64.iso" in first
        vendored = tmp_path / "vendored"
        copied = run_cli("vendor", profile, vendored, "--cache-dir", cache, *FAST)
        assert copied.returncode == 0, copied.stderr
        assert hashlib.sha256((vendored / kernel_apk).read_bytes()).hexdigest() == \
            hashlib.sha256((live / kernel_apk).read_bytes()).hexdigest()
        (live / kernel_apk).unlink()
        gone = run_cli("build", profile, "--output-dir", tmp_path / "out-live",
                       "--cache-dir", tmp_path / "cold", *FAST)
        assert gone.returncode == 3
        assert f"package {kernel.name}-{kernel.version} is locked, but" in gone.stderr
        assert "alpine-composer vendor" in gone.stderr
    offline = run_cli("build", profile, "--mirror", vendored, "--offline", "--output-dir",
                      tmp_path / "out-offline", "--cache-dir", tmp_path / "empty", *FAST)
    assert offline.returncode == 0, offline.stderr
    assert artifacts(tmp_path / "out-offline" / "virt") == first
    rebuilt = run_cli("verify", "--rebuild", profile, "--mirror", vendored, "--offline",
                      "--output-dir", tmp_path / "out", "--cache-dir", tmp_path / "empty2", *FAST)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"rebuild identical  {tmp_path / 'out' / 'virt' / 'virt-3.20.3-x86_64.iso'}" in \
        rebuilt.stdout
