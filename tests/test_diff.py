"""`alpine-composer diff` on what the real pipeline builds: a planted difference at each level
(package, file, format field) is found and named for every output format, and identical
inputs are identical.

Two builds of the same profile differ in three planted ways: the image's apk database says
busybox was upgraded (package level), ``/etc/app.conf`` has other content and mode (file
level), and the tarball is zstd instead of gzip and the image config carries another label
(format level). ISOs come from the ISO writer on a boot tree (tests/stages/test_boot.py).
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import pytest

from composer.cli import main
from composer.context import BuildContext
from composer.diff import DiffReport, diff_paths
from composer.profile import load_profile
from composer.stages.boot import boot_media
from composer.stages.pipeline import build
from composer.writers.iso import write_iso
from tests.conftest import write_profile
from tests.helpers.gpg import SigningKey
from tests.helpers.mirror import build_mirror
from tests.stages.test_boot import EPOCH, X86, boot_tree

INSTALLED = b"C:Q1bXUGQ1tqhDs6XnmOWk4YyVWA8pY=\nP:busybox\nV:1.36.1-r%d\nA:x86_64\n\n"
OUTPUTS = [{"format": "tar", "compression": "gzip"}, {"format": "oci", "tag": "t"},
           {"format": "oci-archive", "tag": "t"}, {"format": "docker-archive", "tag": "t"}]


def _profile(folder: Path, mirror_url: str, key: SigningKey, *, variant: int) -> Path:
    outputs = [dict(o) for o in OUTPUTS]
    if variant == 2:
        outputs[0]["compression"] = "zstd"
    return write_profile(
        folder, mirror_url=mirror_url, key=key, outputs=outputs, sbom=False,
        config={"labels": {"team": f"t{variant}"}},
        overlay={"files": [
            {"path": "/etc/app.conf", "content": f"a = {variant}\n",
             "mode": "0644" if variant == 1 else "0600"},
            {"path": "/lib/apk/db/installed", "content": (INSTALLED % variant).decode()}]})


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey) -> dict[int, Path]:
    """Output folders 1 and 2 (planted differences) and 3 (a second build of 1)."""
    work = tmp_path_factory.mktemp("diff-builds")
    mirror = build_mirror(work / "mirror", key=signing_key)
    found = {}
    for n, variant in ((1, 1), (2, 2), (3, 1)):
        profile = _profile(work / f"p{variant}", mirror.file_url, signing_key, variant=variant)
        ctx = BuildContext.from_environment(load_profile(profile), env={}, progress=False,
                                            retries=0, retry_delay=0.0, log=lambda _: None,
                                            output_dir=work / f"out{n}", cache_dir=work / "cache")
        found[n] = build(ctx).output_dir
    return found


def lines(report: DiffReport) -> list[str]:
    return [c.describe(report.labels) for c in report.changes]


def test_tarballs(builds: dict[int, Path]) -> None:
    a = builds[1] / "test-3.20.3-x86_64.tar.gz"
    b = builds[2] / "test-3.20.3-x86_64.tar.zst"
    report = diff_paths(a, b)
    assert report.kind == "tar"
    assert [c.describe() for c in report.at("package")] == [
        "busybox: upgraded 1.36.1-r1 (A) → 1.36.1-r2 (B)"]
    found = lines(report)
    assert "/etc/app.conf: mode 0o644 (A) != 0o600 (B)" in found
    assert any(line.startswith("/etc/app.conf: content sha256 ") for line in found)
    assert "compression: compression gzip (A) != zstd (B)" in found
    assert "compression: os 3 (A) only in A" not in found
    assert diff_paths(a, builds[3] / a.name).identical


@pytest.mark.parametrize(("name", "kind", "scope"), [
    ("oci", "oci-layout", "linux/amd64"), ("test-3.20.3.oci.tar", "oci-archive", "linux/amd64"),
    ("test-3.20.3-x86_64.docker.tar", "docker-archive", "image 1")])
def test_image_layouts_and_archives(builds: dict[int, Path], name: str, kind: str,
                                    scope: str) -> None:
    report = diff_paths(builds[1] / name, builds[2] / name)
    assert report.kind == kind
    assert [c.describe() for c in report.at("package")] == [
        f"{scope}: busybox: upgraded 1.36.1-r1 (A) → 1.36.1-r2 (B)"]
    found = lines(report)
    assert f"{scope} layer 1!/etc/app.conf: mode 0o644 (A) != 0o600 (B)" in found
    assert f"{scope} config: $.config.Labels.team t1 (A) != t2 (B)" in found
    assert diff_paths(builds[1] / name, builds[3] / name).identical


def test_out_folders_pair_artifacts_by_role(builds: dict[int, Path]) -> None:
    report = diff_paths(builds[1], builds[2])
    assert report.kind == "out-folder"
    packages = [c.describe() for c in report.at("package")]
    assert "test-3.20.3-x86_64.tar.gz: busybox: upgraded 1.36.1-r1 (A) → 1.36.1-r2 (B)" \
        in packages
    assert "oci!linux/amd64: busybox: upgraded 1.36.1-r1 (A) → 1.36.1-r2 (B)" in packages
    found = lines(report)
    # The gzip tarball of A is paired with the zstd tarball of B: same role (tar, x86_64).
    assert "artifacts: tar x86_64 test-3.20.3-x86_64.tar.gz (A) != " \
           "test-3.20.3-x86_64.tar.zst (B)" in found
    assert "test-3.20.3-x86_64.tar.gz!/etc/app.conf: mode 0o644 (A) != 0o600 (B)" in found
    assert "test-3.20.3.oci.tar!linux/amd64 config: $.config.Labels.team t1 (A) != t2 (B)" \
        in found
    assert "test-3.20.3-x86_64.docker.tar!image 1 layer 1!/etc/app.conf: mode 0o644 (A) != " \
           "0o600 (B)" in found
    # Levels come in order: packages, files, format fields.
    levels = [c.level for c in report.changes]
    assert levels == sorted(levels, key=["package", "file", "format"].index)
    assert diff_paths(builds[1], builds[3]).identical


def _iso(tmp_path: Path, name: str, *, label: str = X86.label, release: bytes = b"1",
         os_release: bytes = b"ID=alpine\n") -> Path:
    tree = boot_tree()
    tree.add_file("etc/os-release", os_release)
    tree.add_file("lib/apk/db/installed", INSTALLED.replace(b"r%d", b"r" + release))
    spec = boot_media(tree, dataclasses.replace(X86, label=label), epoch=EPOCH)
    out = io.BytesIO()
    write_iso(spec, out)
    path = tmp_path / name
    path.write_bytes(out.getvalue())
    return path


def test_isos_name_package_file_and_field(tmp_path: Path) -> None:
    a = _iso(tmp_path, "a.iso")
    b = _iso(tmp_path, "b.iso", label="another label", release=b"2", os_release=b"ID=other\n")
    report = diff_paths(a, b)
    assert report.kind == "iso"
    assert [c.describe() for c in report.at("package")] == [
        "/boot/initramfs-virt: busybox: upgraded 1.36.1-r1 (A) → 1.36.1-r2 (B)"]
    found = lines(report)
    assert "/boot/initramfs-virt!/etc/os-release: size 10 (A) != 9 (B)" in found
    assert "ISO primary volume descriptor: volume id alpine-virt 3.20.3 x86_64 (A) != " \
           "another label (B)" in found
    # The UKI inside the FAT image carries the same initramfs as a PE section.
    assert any(line.startswith("/boot/efi.img!/EFI/BOOT/BOOTX64.EFI PE section .initrd: "
                               "content sha256 ") for line in found)
    assert diff_paths(a, _iso(tmp_path, "c.iso")).identical


def test_iso_reports_boot_catalog_and_partition_tables(tmp_path: Path) -> None:
    a = _iso(tmp_path, "a.iso")
    data = bytearray(a.read_bytes())
    data[440] ^= 0xFF  # the MBR disk signature
    b = tmp_path / "b.iso"
    b.write_bytes(bytes(data))
    report = diff_paths(a, b)
    [change] = report.changes
    assert (change.where, change.what) == ("MBR", "disk signature")
    full = diff_paths(a, b, labels=("published", "rebuild")).to_json()
    assert full["identical"] is False and full["counts"] == {"package": 0, "file": 0, "format": 1}


def test_iso_el_torito_entries_name_their_boot_images(tmp_path: Path) -> None:
    from contextlib import ExitStack

    from composer.diff.engine import Side
    from composer.diff.iso import read_iso
    from composer.diff.source import DiffLimits

    a = _iso(tmp_path, "a.iso")
    with ExitStack() as stack:
        side = Side("A", DiffLimits(), stack)
        read_iso(side.snap, side.open(a))
    fields = side.snap.fields
    assert fields["El Torito initial entry"]["boot image"] == "/boot/syslinux/isolinux.bin"
    assert fields["El Torito section 1 entry 1"]["boot image"] == "/boot/efi.img"
    assert fields["El Torito section 1 header"]["platform"] == "EFI"
    assert fields["GPT partition 1"]["type GUID"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    assert fields["GPT header"]["header CRC32 valid"] == "yes"
    assert fields["GPT header"]["entries CRC32 valid"] == "yes"
    assert fields["MBR partition 1"]["type"] == "0xee"
    assert side.snap.files["/boot/efi.img!/EFI/BOOT/BOOTX64.EFI"]["type"] == "file"
    # The kernel's record points into the UKI's .linux section inside efi.img.
    kernel = side.snap.fields["/boot/vmlinuz-virt header"]["extent"]
    efi = side.snap.fields["/boot/efi.img header"]["extent"]
    assert isinstance(kernel, int) and isinstance(efi, int) and kernel > efi


# -- the command line ----------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_exit_codes_and_json(builds: dict[int, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    a, b = builds[1] / "oci", builds[2] / "oci"
    code, out, err = _cli(capsys, "diff", a, builds[3] / "oci")
    assert (code, err) == (0, "")
    assert out == f"A: {a}\nB: {builds[3] / 'oci'}\nidentical (oci-layout)\n"
    code, out, _ = _cli(capsys, "diff", a, b, "--limit", "1")
    assert code == 1
    text = out.splitlines()
    assert text[2] == "oci-layout: differs in 1 packages, 3 files, 7 format fields"
    assert text[4:7] == ["Packages (1):",
                         "  linux/amd64: busybox: upgraded 1.36.1-r1 (A) → 1.36.1-r2 (B)", ""]
    assert text[7] == "Files (3):" and text[9] == "  … and 2 more"
    code, out, _ = _cli(capsys, "diff", a, b, "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is True and doc["identical"] is False
    assert doc["counts"] == {"package": 1, "file": 3, "format": 7}
    assert {"level": "package", "where": "linux/amd64: busybox", "what": "upgraded",
            "a": "1.36.1-r1", "b": "1.36.1-r2"} in doc["changes"]
    # Bad input: a usage error (2), a malformed archive (5), each one line.
    code, out, err = _cli(capsys, "diff", a, tmp_path / "missing")
    assert (code, err) == (2, f"alpine-composer: error: {tmp_path / 'missing'}: no such file or "
                              "folder\n")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"x" * 4096)
    code, out, err = _cli(capsys, "diff", junk, junk.with_name("junk2.tar"))
    assert code == 2
    (tmp_path / "junk2.tar").write_bytes(b"y" * 4096)
    code, out, err = _cli(capsys, "diff", junk, tmp_path / "junk2.tar", "--json")
    assert code == 5
    assert err == (f"alpine-composer: error: {junk}: not an ISO, a disk image (GPT, raw or "
                   "qcow2), a tar archive (plain, gzip, zstd or xz), an OCI layout or archive, "
                   "or an output folder\n")
    assert json.loads(out) == {"ok": False, "exit": 5, "error": err.split("error: ", 1)[1][:-1]}
