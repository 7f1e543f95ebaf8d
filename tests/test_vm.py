"""qemu command lines of the ``boot`` command, one per way of booting."""

from __future__ import annotations

from pathlib import Path

import pytest

from composer.errors import UsageError
from composer.vm import VmSettings, firmware_file, qemu_command
from tests.conftest import run_cli

ISO = Path("out/virt/virt.iso")


@pytest.mark.parametrize(("firmware", "medium", "tail"), [
    ("bios", "cd", ["-cdrom", "out/virt/virt.iso", "-boot", "d"]),
    ("bios", "disk", ["-drive", "file=out/virt/virt.iso,format=raw,media=disk,snapshot=on"]),
    ("uefi", "cd", ["-cdrom", "out/virt/virt.iso", "-boot", "d"]),
    ("uefi", "disk", ["-drive", "file=out/virt/virt.iso,format=raw,if=virtio,readonly=on"]),
])
def test_x86_commands(firmware: str, medium: str, tail: list[str]) -> None:
    if firmware == "uefi" and firmware_file("x86_64") is None:
        pytest.skip("OVMF is not installed (apt-get install ovmf)")
    command = qemu_command(ISO, VmSettings(firmware=firmware, medium=medium))
    assert command[:6] == ["qemu-system-x86_64", "-m", "1024", "-nographic", "-no-reboot"] + (
        ["-bios"] if firmware == "uefi" else command[5:6])
    assert command[-len(tail):] == tail
    assert "kvm" not in " ".join(command)


@pytest.mark.parametrize(("settings", "message"), [
    (VmSettings(firmware="efi"), "--firmware must be one of bios, uefi"),
    (VmSettings(medium="usb"), "--as must be one of cd, disk"),
    (VmSettings(arch="aarch64"), "aarch64 boots with UEFI only: use --firmware uefi"),
])
def test_bad_choices(settings: VmSettings, message: str) -> None:
    with pytest.raises(UsageError) as info:
        qemu_command(ISO, settings)
    assert str(info.value) == message


def test_boot_command_without_qemu_says_what_to_install(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    image = tmp_path / "x.iso"
    image.write_bytes(b"\0" * 2048)
    result = run_cli("boot", image, env={"PATH": str(tmp_path)})
    assert (result.returncode, result.stderr) == (
        1, "alpine-composer: error: qemu-system-x86_64 is not installed (apt-get install "
           "qemu-system-x86)\n")


def test_boot_command_needs_an_iso_build(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    (tmp_path / "manifest.json").write_text('{"outputs": [{"format": "tar", "path": "x.tar"}]}')
    result = run_cli("boot", tmp_path)
    assert (result.returncode, result.stderr) == (
        2, f"alpine-composer: error: {tmp_path}: the build has no ISO output (add {{format: iso}} "
           "to outputs)\n")


def _iso_with_boot_files(path: Path, kernel: bytes, initramfs: bytes) -> Path:
    """A small Rock Ridge ISO holding /boot/vmlinuz-virt and /boot/initramfs-virt."""
    import io

    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(rock_ridge="1.09")
    iso.add_directory("/BOOT", rr_name="boot")
    for name, data in (("VMLINUZ", kernel), ("INITRAMF", initramfs)):
        rr = "vmlinuz-virt" if name == "VMLINUZ" else "initramfs-virt"
        iso.add_fp(io.BytesIO(data), len(data), f"/BOOT/{name}.;1", rr_name=rr)
    iso.write(str(path))
    iso.close()
    return path


def test_memory_floor_counts_kernel_initramfs_and_its_unpacked_size(tmp_path: Path) -> None:
    import gzip

    from composer.vm import MEMORY_HEADROOM_MB, minimum_memory_mb

    unpacked = bytes(40 << 20)
    initramfs = gzip.compress(unpacked, mtime=0)
    iso = _iso_with_boot_files(tmp_path / "x.iso", bytes(3 << 20), initramfs)
    expected = -(-((3 << 20) + len(initramfs) + (40 << 20)) // (1 << 20)) + MEMORY_HEADROOM_MB
    assert minimum_memory_mb(iso) == expected == 44 + MEMORY_HEADROOM_MB
    result = run_cli("boot", iso, "--print", "--memory", str(expected - 1))
    assert (result.returncode, result.stderr) == (
        2, f"alpine-composer: error: --memory {expected - 1}: x.iso needs at least {expected} MB "
           "(its root filesystem is unpacked into RAM)\n")
    plain = _iso_with_boot_files(tmp_path / "y.iso", b"k", b"")
    assert minimum_memory_mb(plain) == 1 + MEMORY_HEADROOM_MB


def test_boot_flags_reach_qemu(tmp_path: Path) -> None:
    iso = _iso_with_boot_files(tmp_path / "x.iso", b"kernel", b"")
    firmware = tmp_path / "OVMF_CUSTOM.fd"
    firmware.write_bytes(b"\0")
    result = run_cli("boot", iso, "--print", "--ssh-port", "2222", "--cpus", "2", "--kvm",
                     "--firmware", "uefi", "--firmware-path", firmware, "--",
                     "-d", "guest_errors")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"qemu-system-x86_64 -m 1024 -nographic -no-reboot -accel kvm -cpu host -smp 2 "
        f"-bios {firmware} -nic user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:2222-:22 "
        f"-cdrom {iso} -boot d -d guest_errors\n")


def test_a_virtio_nic_on_the_user_network_by_default() -> None:
    command = qemu_command(ISO, VmSettings())
    assert command[command.index("-nic") + 1] == "user,model=virtio-net-pci"
    assert "-accel" not in command and "-smp" not in command


@pytest.mark.parametrize(("args", "message"), [
    (["--cpus", "0"], "--cpus must be at least 1"),
    (["--ssh-port", "70000"], "--ssh-port 70000 is not a TCP port (1-65535)"),
    (["--firmware-path", "/nonexistent/OVMF.fd"], "--firmware-path /nonexistent/OVMF.fd: no such file"),
    (["extra"], "alpine-composer: unrecognized arguments: extra"),
])
def test_bad_boot_flags(tmp_path: Path, args: list[str], message: str) -> None:
    iso = _iso_with_boot_files(tmp_path / "x.iso", b"kernel", b"")
    result = run_cli("boot", iso, "--print", *args)
    assert (result.returncode, result.stderr) == (2, f"alpine-composer: error: {message}\n")


def test_arguments_after_double_dash_are_for_boot_only() -> None:
    result = run_cli("version", "--", "-d")
    assert (result.returncode, result.stderr) == (
        2, "alpine-composer: error: version: unexpected arguments after -- (only boot takes "
           "them, for qemu)\n")


def test_console_hints_say_how_to_quit_and_where_ssh_is() -> None:
    from composer.vm import console_hints

    assert console_hints(VmSettings(ssh_port=2222)) == [
        "serial console on this terminal: quit qemu with Ctrl-A X, or power the guest off "
        "with `poweroff`",
        "SSH: ssh -p 2222 root@127.0.0.1 (guest port 22)"]


DISK = Path("out/virt/virt-3.23-x86_64.img")


@pytest.mark.parametrize(("settings", "tail"), [
    (VmSettings(firmware="uefi", medium="disk", disk_format="raw"),
     ["-drive", "file=out/virt/virt-3.23-x86_64.img,format=raw,snapshot=on,if=virtio"]),
    (VmSettings(firmware="uefi", medium="disk", disk_format="qcow2"),
     ["-drive", "file=out/virt/virt-3.23-x86_64.img,format=qcow2,snapshot=on,if=virtio"]),
    (VmSettings(firmware="uefi", medium="disk", disk_format="raw", nvme=True),
     ["-drive", "file=out/virt/virt-3.23-x86_64.img,format=raw,snapshot=on,if=none,id=disk0",
      "-device", "nvme,drive=disk0,serial=composer-disk"]),
])
def test_disk_image_commands(settings: VmSettings, tail: list[str]) -> None:
    if firmware_file("x86_64") is None:
        pytest.skip("OVMF is not installed (apt-get install ovmf)")
    command = qemu_command(DISK, settings)
    assert command[-len(tail):] == tail
    assert command[command.index("-bios") + 1] == firmware_file("x86_64")


def test_secure_boot_command_uses_smm_and_pflash() -> None:
    from composer.vm import SecureBootFirmware

    firmware = SecureBootFirmware(Path("/fw/CODE.secboot.fd"), Path("/tmp/x,y/VARS.fd"))
    command = qemu_command(DISK, VmSettings(firmware="uefi", medium="disk", disk_format="raw",
                                            secure_boot=firmware))
    assert command == [
        "qemu-system-x86_64", "-m", "1024", "-nographic", "-no-reboot",
        "-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on",
        "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.secboot.fd",
        "-drive", "if=pflash,format=raw,unit=1,file=/tmp/x,,y/VARS.fd",
        "-nic", "user,model=virtio-net-pci",
        "-drive", "file=out/virt/virt-3.23-x86_64.img,format=raw,snapshot=on,if=virtio"]


def _secure(**changes: object) -> VmSettings:
    from dataclasses import replace

    from composer.vm import SecureBootFirmware

    base = VmSettings(firmware="uefi", medium="disk", disk_format="raw",
                      secure_boot=SecureBootFirmware(Path("c"), Path("v")))
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(("settings", "message"), [
    (VmSettings(medium="disk", disk_format="raw"),
     "a disk image boots with UEFI only: use --firmware uefi"),
    (VmSettings(firmware="uefi", medium="cd", disk_format="raw"),
     "a disk image is attached as a disk: drop --as cd"),
    (VmSettings(firmware="uefi", medium="disk", disk_format="vmdk"),
     "disk image format 'vmdk' is not one of raw, qcow2"),
    (VmSettings(nvme=True), "--nvme is for disk images; an ISO boots with --as cd or --as disk"),
    (_secure(disk_format=None, medium="cd"),
     "--secure-boot is for disk images (their UKI is signed; an ISO's boot loader is not)"),
    (_secure(arch="aarch64"), "--secure-boot: only x86_64 (OVMF) for now, not aarch64"),
    (_secure(firmware_path=Path("/x.fd")),
     "--secure-boot brings its own firmware: drop --firmware-path"),
])
def test_bad_disk_settings(settings: VmSettings, message: str) -> None:
    with pytest.raises(UsageError) as info:
        qemu_command(DISK, settings)
    assert str(info.value) == message


def _disk_build(folder: Path, *, cert: bool) -> Path:
    """An output folder whose manifest lists an ISO, a disk image and its certificate."""
    import json

    outputs = [{"format": "iso", "arch": "x86_64", "path": "virt-3.23-x86_64.iso"},
               {"format": "disk", "arch": "x86_64", "path": "virt-3.23-x86_64.qcow2"}]
    if cert:
        outputs.append({"format": "secure-boot-cert", "arch": "x86_64",
                        "path": "virt-3.23-x86_64.crt"})
    (folder / "manifest.json").write_text(json.dumps({"outputs": outputs}))
    _iso_with_boot_files(folder / "virt-3.23-x86_64.iso", b"kernel", b"")
    (folder / "virt-3.23-x86_64.qcow2").write_bytes(b"QFI\xfb")
    return folder


def test_boot_picks_the_disk_image_of_a_build(tmp_path: Path) -> None:
    if firmware_file("x86_64") is None:
        pytest.skip("OVMF is not installed (apt-get install ovmf)")
    folder = _disk_build(tmp_path, cert=False)
    result = run_cli("boot", folder, "--print")
    assert result.stdout.endswith(f"-cdrom {folder}/virt-3.23-x86_64.iso -boot d\n")
    for args in (["--image", "disk"], []):
        target = folder if args else folder / "virt-3.23-x86_64.qcow2"
        result = run_cli("boot", target, "--print", "--nvme", *args)
        assert result.returncode == 0, result.stderr
        assert result.stdout == (
            f"qemu-system-x86_64 -m 1024 -nographic -no-reboot -bios {firmware_file('x86_64')} "
            f"-nic user,model=virtio-net-pci -drive file={folder}/virt-3.23-x86_64.qcow2,"
            "format=qcow2,snapshot=on,if=none,id=disk0 -device nvme,drive=disk0,"
            "serial=composer-disk\n")
    result = run_cli("boot", folder, "--image", "disk", "--firmware", "bios", "--print")
    assert (result.returncode, result.stderr) == (
        2, "alpine-composer: error: a disk image boots with UEFI only: use --firmware uefi\n")


def test_secure_boot_needs_the_certificate_of_the_build(tmp_path: Path) -> None:
    folder = _disk_build(tmp_path, cert=False)
    result = run_cli("boot", folder, "--secure-boot", "--print")
    assert (result.returncode, result.stderr) == (
        2, "alpine-composer: error: --secure-boot: virt-3.23-x86_64.qcow2 has no certificate "
           "beside it (virt-3.23-x86_64.crt); build it with secure_boot\n")
    result = run_cli("boot", folder, "--image", "iso", "--secure-boot", "--print")
    assert (result.returncode, result.stderr) == (
        2, "alpine-composer: error: --secure-boot is for disk images (their UKI is signed; an "
           "ISO's boot loader is not)\n")


def test_secure_boot_print_enrolls_the_certificate(tmp_path: Path) -> None:
    import shutil

    from composer.errors import ComposerError
    from composer.vm_secboot import secure_firmware, virt_fw_vars
    from tests.helpers.sbkeys import make_identity

    try:
        code, _ = secure_firmware()
        virt_fw_vars()
    except ComposerError as exc:
        pytest.skip(str(exc))
    folder = _disk_build(tmp_path, cert=True)
    (folder / "virt-3.23-x86_64.crt").write_bytes(make_identity().cert_pem)
    result = run_cli("boot", folder, "--secure-boot", "--print")
    assert result.returncode == 0, result.stderr
    prefix = "==> Secure Boot variables with virt-3.23-x86_64.crt enrolled: "
    assert result.stderr.startswith(prefix) and result.stderr.endswith(" (remove it when done)\n")
    scratch = Path(result.stderr[len(prefix):-len(" (remove it when done)\n")])
    try:
        variables = scratch / "OVMF_VARS.secboot.fd"
        assert result.stdout == (
            "qemu-system-x86_64 -m 1024 -nographic -no-reboot -machine q35,smm=on -global "
            "driver=cfi.pflash01,property=secure,value=on -drive "
            f"if=pflash,format=raw,unit=0,readonly=on,file={code} -drive "
            f"if=pflash,format=raw,unit=1,file={variables} -nic user,model=virtio-net-pci "
            f"-drive file={folder}/virt-3.23-x86_64.qcow2,format=qcow2,snapshot=on,if=virtio\n")
        assert variables.stat().st_size == Path("/usr/share/OVMF/OVMF_VARS_4M.fd").stat().st_size
    finally:
        shutil.rmtree(scratch)


def test_missing_virt_fw_vars_names_the_pip_package(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from composer.vm import MissingToolError
    from composer.vm_secboot import virt_fw_vars

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python3"))
    with pytest.raises(MissingToolError) as info:
        virt_fw_vars()
    assert str(info.value) == ("virt-fw-vars is not installed (pip install virt-firmware); boot "
                               "--secure-boot needs it to enroll the certificate")
