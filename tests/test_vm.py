"""qemu command lines of the ``boot`` command, one per way of booting."""

from __future__ import annotations

from pathlib import Path

import pytest

from composer.errors import UsageError
from composer.vm import VmSettings, firmware_file, qemu_command

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
