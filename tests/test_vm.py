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
