"""The shipped virt and standard profiles build ISOs through the real CLI and boot in qemu.

The mirror holds the real 3.20.3 minirootfs and a test-signed ``main`` repository with
the packages the presets install (Debian's kernel and loaders under Alpine's names).
Each test profile extends a shipped profile and adds only what the test mirror needs
(mirror, keys, repositories) plus an inittab that prints a marker and powers off.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, require_shared, run_cli
from tests.helpers.apkrepo import PackageSpec, build_repository, signing_key
from tests.helpers.bootpkgs import BOOT_MARKER, base_packages, marker_inittab
from tests.helpers.gpg import SigningKey
from tests.helpers.mirror import build_mirror
from tests.helpers.qemu import MODE_IDS, MODES, boot_to_marker, missing_tools

pytestmark = pytest.mark.slow

KEY = signing_key()


@dataclass(frozen=True)
class IsoMirror:
    root: Path
    url: str
    key: SigningKey


@pytest.fixture(scope="module")
def iso_mirror(tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey,
               boot_packages: dict[str, PackageSpec]) -> IsoMirror:
    fixtures = require_shared()
    root = tmp_path_factory.mktemp("iso-mirror")
    real = fixtures / "minirootfs" / "alpine-minirootfs-3.20.3-x86_64.tar.gz"
    mirror = build_mirror(root, key=signing_key, tarball=real.read_bytes())
    build_repository(root / "v3.20" / "main", [*base_packages(), *boot_packages.values()], KEY)
    return IsoMirror(root=root, url=mirror.file_url, key=signing_key)


def child_profile(folder: Path, mirror: IsoMirror, shipped: str, **fields: Any) -> Path:
    """A profile extending ``profiles/<shipped>.yaml`` that builds against the test mirror."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "release-key.asc").write_bytes(mirror.key.public_armored)
    (folder / KEY.name).write_bytes(KEY.public_pem)
    data: dict[str, Any] = {
        "name": shipped,
        "extends": os.fspath(REPO / "profiles" / f"{shipped}.yaml"),
        "mirror": mirror.url,
        "trust": {"fingerprint": mirror.key.fingerprint, "key": "release-key.asc"},
        "repositories": ["main"],
        "keys": [KEY.name],
        "overlay": {"files": [{"path": "/etc/inittab", "content": marker_inittab().decode()}]},
    }
    data.update(fields)
    path = folder / f"{shipped}-test.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def build(profile: Path, out: Path, cache: Path, **options: Any) -> subprocess.CompletedProcess[str]:
    return run_cli("build", profile, "--output-dir", out, "--cache-dir", cache, **options)


@pytest.fixture(scope="module")
def virt_build(tmp_path_factory: pytest.TempPathFactory, iso_mirror: IsoMirror) -> Path:
    work = tmp_path_factory.mktemp("virt")
    profile = child_profile(work / "p", iso_mirror, "virt")
    result = build(profile, work / "out", work / "cache")
    assert result.returncode == 0, result.stderr
    folder = work / "out" / "virt"
    iso = folder / "virt-3.20.3-x86_64.iso"
    digest = hashlib.sha256(iso.read_bytes()).hexdigest()
    assert f"sha256:{digest}  {iso}" in result.stdout.splitlines()
    assert f"{digest}  virt-3.20.3-x86_64.iso" in (folder / "SHA256SUMS").read_text().splitlines()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {"path": "virt-3.20.3-x86_64.iso", "format": "iso", "arch": "x86_64",
            "sha256": digest, "size": iso.stat().st_size}.items() <= next(
        o for o in manifest["outputs"] if o["format"] == "iso").items()
    return folder


@pytest.mark.parametrize(("firmware", "medium"), MODES, ids=MODE_IDS)
def test_virt_profile_boots(virt_build: Path, firmware: str, medium: str) -> None:
    boot_to_marker(virt_build / "virt-3.20.3-x86_64.iso", firmware, medium, BOOT_MARKER)


def test_verify_and_rebuild(virt_build: Path) -> None:
    profile = virt_build.parent.parent / "p" / "virt-test.yaml"
    checked = run_cli("verify", virt_build)
    assert checked.returncode == 0, checked.stderr
    assert f"OK  {virt_build / 'virt-3.20.3-x86_64.iso'}" in checked.stdout.splitlines()
    again = run_cli("verify", "--rebuild", profile, "--output-dir", virt_build.parent,
                    "--cache-dir", virt_build.parent.parent / "cache")
    assert again.returncode == 0, again.stderr
    assert f"rebuild identical  {virt_build / 'virt-3.20.3-x86_64.iso'}" in again.stdout
    iso = virt_build / "virt-3.20.3-x86_64.iso"
    data = bytearray(iso.read_bytes())
    data[40000] ^= 1
    tampered = virt_build.parent.parent / "tampered"
    tampered.mkdir()
    for name in ("SHA256SUMS", "manifest.json"):
        (tampered / name).write_bytes((virt_build / name).read_bytes())
    (tampered / iso.name).write_bytes(bytes(data))
    failed = run_cli("verify", tampered / iso.name)
    assert failed.returncode == 4
    assert failed.stderr.endswith("which SHA256SUMS and manifest.json both record\n")


def test_same_iso_under_another_tz_umask_folder_and_cache(virt_build: Path, iso_mirror: IsoMirror,
                                                          tmp_path: Path) -> None:
    profile = child_profile(tmp_path / "p", iso_mirror, "virt")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    result = run_cli("build", profile, "--output-dir", tmp_path / "out", "--cache-dir",
                     tmp_path / "other-cache", cwd=elsewhere, umask=0o077,
                     env={"TZ": "America/St_Johns"})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/virt/virt-3.20.3-x86_64.iso").read_bytes() == (
        virt_build / "virt-3.20.3-x86_64.iso").read_bytes()


def test_boot_command_starts_the_iso(virt_build: Path) -> None:
    reason = missing_tools("uefi")
    if reason:
        pytest.skip(reason)
    printed = run_cli("boot", virt_build, "--firmware", "uefi", "--as", "disk", "--print")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("qemu-system-x86_64 -m 1024 -nographic -no-reboot -bios ")
    assert printed.stdout.rstrip().endswith(
        f"-drive file={virt_build / 'virt-3.20.3-x86_64.iso'},format=raw,if=virtio,readonly=on")
    started = subprocess.run([sys.executable, "-m", "composer", "boot", str(virt_build)],
                             env={**os.environ, "PYTHONPATH": os.fspath(REPO)},
                             stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=150)
    assert started.returncode == 0, started.stderr
    assert f"{BOOT_MARKER}-BIOS" in started.stdout


def test_standard_profile_builds_and_boots(iso_mirror: IsoMirror, tmp_path: Path) -> None:
    profile = child_profile(tmp_path / "p", iso_mirror, "standard")
    result = build(profile, tmp_path / "out", tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    iso = tmp_path / "out/standard/standard-3.20.3-x86_64.iso"
    with iso.open("rb") as fh:
        fh.seek(16 * 2048 + 40)
        assert fh.read(32).rstrip() == b"alpine-standard 3.20.3 x86_64"
    for firmware, medium in (("bios", "disk"), ("uefi", "cd")):
        boot_to_marker(iso, firmware, medium, BOOT_MARKER)


def test_missing_kernel_stops_before_anything_is_written(iso_mirror: IsoMirror,
                                                         tmp_path: Path) -> None:
    profile = child_profile(tmp_path / "p", iso_mirror, "virt",
                            packages=["alpine-base", "syslinux", "gummiboot"])
    result = build(profile, tmp_path / "out", tmp_path / "cache")
    assert result.returncode == 6
    assert result.stderr.splitlines()[-1] == (
        "alpine-composer: error: ISO boot files missing from the image: /boot/vmlinuz-virt "
        "(add package linux-virt)")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(("fields", "message"), [
    ({"outputs": [{"format": "iso", "label": "x" * 33}]},
     "outputs[0]: label '" + "x" * 33 + "' must be 1 to 32 characters (got 33)"),
    ({"arch": "ppc64le", "outputs": [{"format": "iso", "boot": ["uefi"]}]},
     "outputs[0]: boot: uefi has no uki loader for ppc64le (available for aarch64, x86_64)"),
    ({"arch": "aarch64", "outputs": [{"format": "iso", "boot": ["bios", "uefi"]}]},
     "outputs[0]: boot: bios is not possible on aarch64 (BIOS boot exists on x86 only); "
     "use boot: [uefi]"),
    ({"outputs": [{"format": "iso", "efi_loader": "syslinux"}]},
     "outputs[0]: efi_loader: syslinux is refused: syslinux.efi faults under UEFI firmware "
     "when the ISO starts from a CD drive; use efi_loader: uki (the default)"),
])
def test_profile_errors_come_before_any_download(tmp_path: Path, fields: dict[str, Any],
                                                 message: str, signing_key: SigningKey) -> None:
    nowhere = IsoMirror(root=tmp_path, url="http://127.0.0.1:9/alpine", key=signing_key)
    profile = child_profile(tmp_path / "p", nowhere, "virt", **fields)
    result = build(profile, tmp_path / "out", tmp_path / "cache")
    assert (result.returncode, result.stderr) == (2, f"alpine-composer: error: {profile}: {message}\n")
    assert not (tmp_path / "out" / "virt").exists()
