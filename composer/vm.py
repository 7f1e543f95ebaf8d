"""``alpine-composer boot``: start a built ISO in qemu, as a CD or as a disk, BIOS or UEFI.

Like ``mkosi qemu``: a convenience for looking at an image, not part of a build. The
console is the terminal (``-nographic``: serial on stdio). KVM is used only when asked
for, because it is not usable on every machine (TCG always is).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from composer.errors import ComposerError, UsageError
from composer.jsonsafe import load_json_file
from composer.manifest import MANIFEST_NAME, MAX_ARTIFACTS, MAX_RECORD_BYTES, artifact_path_problem
from composer.numbers import clip

FIRMWARES = ("bios", "uefi")
MEDIA = ("cd", "disk")
QEMU = {"x86_64": "qemu-system-x86_64", "aarch64": "qemu-system-aarch64"}
QEMU_PACKAGE = {"x86_64": "qemu-system-x86", "aarch64": "qemu-system-arm"}
UEFI_FIRMWARE = {
    "x86_64": ("/usr/share/ovmf/OVMF.fd", "/usr/share/qemu/OVMF.fd"),
    "aarch64": ("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd", "/usr/share/AAVMF/AAVMF_CODE.fd"),
}
UEFI_PACKAGE = {"x86_64": "ovmf", "aarch64": "qemu-efi-aarch64"}


class MissingToolError(ComposerError):
    """A program the command needs (qemu, firmware) is not installed."""

    exit_code = 1


@dataclass(frozen=True)
class VmSettings:
    """How to start the image."""

    firmware: str = "bios"
    medium: str = "cd"
    arch: str = "x86_64"
    memory_mb: int = 1024
    kvm: bool = False


def firmware_file(arch: str) -> str | None:
    """The UEFI firmware image for ``arch`` on this machine, if one is installed."""
    return next((p for p in UEFI_FIRMWARE.get(arch, ()) if os.path.exists(p)), None)


def qemu_command(image: Path, settings: VmSettings) -> list[str]:
    """The qemu command line for one way of booting ``image``."""
    if settings.firmware not in FIRMWARES:
        raise UsageError(f"--firmware must be one of {', '.join(FIRMWARES)}")
    if settings.medium not in MEDIA:
        raise UsageError(f"--as must be one of {', '.join(MEDIA)}")
    if settings.arch not in QEMU:
        raise UsageError(f"no qemu for {settings.arch}")
    if settings.arch != "x86_64" and settings.firmware == "bios":
        raise UsageError(f"{settings.arch} boots with UEFI only: use --firmware uefi")
    command = [QEMU[settings.arch], "-m", str(settings.memory_mb), "-nographic", "-no-reboot"]
    if settings.arch == "aarch64":
        command += ["-machine", "virt", "-cpu", "max"]
    if settings.kvm:
        command += ["-accel", "kvm"]
    if settings.firmware == "uefi":
        firmware = firmware_file(settings.arch)
        if firmware is None:
            raise MissingToolError(f"no UEFI firmware for {settings.arch} found (apt-get install "
                                   f"{UEFI_PACKAGE[settings.arch]})")
        command += ["-bios", firmware]
    path = os.fspath(image)
    if settings.medium == "cd":
        if settings.arch == "aarch64":
            command += ["-drive", f"file={path},format=raw,if=none,id=cd,readonly=on",
                        "-device", "virtio-scsi-pci", "-device", "scsi-cd,drive=cd"]
        else:
            command += ["-cdrom", path, "-boot", "d"]
    elif settings.firmware == "uefi" or settings.arch == "aarch64":
        command += ["-drive", f"file={path},format=raw,if=virtio,readonly=on"]
    else:
        # An IDE disk cannot be read-only: a snapshot keeps the image unchanged instead.
        command += ["-drive", f"file={path},format=raw,media=disk,snapshot=on"]
    return command


def require_qemu(arch: str) -> None:
    if shutil.which(QEMU.get(arch, "")) is None:
        raise MissingToolError(f"{QEMU.get(arch, 'qemu')} is not installed (apt-get install "
                               f"{QEMU_PACKAGE.get(arch, 'qemu-system')})")


def start_vm(image: Path, settings: VmSettings, extra: Sequence[str] = ()) -> int:
    """Run qemu in the foreground on this terminal; its exit status."""
    command = qemu_command(image, settings) + list(extra)
    require_qemu(settings.arch)
    return subprocess.run(command, check=False).returncode


def find_iso(target: Path, arch: str | None = None) -> tuple[Path, str]:
    """The ISO to boot and its arch: ``target`` itself, or the one ``manifest.json`` of the
    output folder ``target`` lists (for ``arch``, else x86_64 if there is one)."""
    if not target.exists():
        raise UsageError(f"{target}: no such file or folder (build the profile first)")
    if target.is_file():
        if target.suffix != ".iso":
            raise UsageError(f"{target}: not an ISO image")
        return target, arch or ("aarch64" if target.name.endswith("-aarch64.iso") else "x86_64")
    manifest = target / MANIFEST_NAME
    try:
        document = load_json_file(manifest, what=str(manifest), error=UsageError,
                                  max_bytes=MAX_RECORD_BYTES)
    except FileNotFoundError:
        raise UsageError(f"{target}: no {MANIFEST_NAME}; give an output folder or an .iso file") \
            from None
    isos: dict[str, str] = {}
    outputs = document.optional("outputs")
    for output in outputs.items(max_items=MAX_ARTIFACTS) if outputs is not None else ():
        kind = output.optional("format")
        if kind is None or kind.raw() != "iso":
            continue
        field = output.field("path")
        path = field.str(max_len=1024)
        problem = artifact_path_problem(path)
        if problem is not None:
            field.fail(problem)
        isos[output.field("arch").str(max_len=64)] = path
    if not isos:
        raise UsageError(f"{target}: the build has no ISO output (add {{format: iso}} to outputs)")
    chosen = arch or ("x86_64" if "x86_64" in isos else sorted(isos)[0])
    if chosen not in isos:
        raise UsageError(f"{target}: no ISO for {chosen} (built: {clip(', '.join(sorted(isos)))})")
    return target / isos[chosen], chosen
