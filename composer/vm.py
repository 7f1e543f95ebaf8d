"""``alpine-composer boot``: start a built ISO in qemu, as a CD or as a disk, BIOS or UEFI.

Like ``mkosi qemu``: a convenience for looking at an image, not part of a build. The
console is the terminal (``-nographic``: serial on stdio). KVM is used only when asked
for, because it is not usable on every machine (TCG always is).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from composer.errors import ComposerError, UsageError
from composer.jsonsafe import load_json_file
from composer.manifest import MANIFEST_NAME, MAX_RECORD_BYTES, recorded_outputs
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
    cpus: int = 1
    ssh_port: int | None = None
    """Host port on 127.0.0.1 forwarded to the guest's port 22."""
    firmware_path: Path | None = None
    """A firmware image in place of the installed OVMF/AAVMF (UEFI) or SeaBIOS (BIOS)."""
    extra: tuple[str, ...] = ()
    """Arguments appended to qemu's command line as given (after ``--``)."""


MEMORY_HEADROOM_MB = 160
"""What the kernel, OpenRC and a few services need beyond the boot files. The whole root
filesystem lives in RAM: below the sum, the kernel cannot unpack the initramfs (a panic
at 96 MB) or init cannot start its services (a login loop at 48 MB)."""


def minimum_memory_mb(image: Path) -> int | None:
    """The least memory the ISO's own boot files need, in MiB: its kernel, the compressed
    initramfs while it is unpacked, the unpacked tree, and :data:`MEMORY_HEADROOM_MB`.
    None for an image without ``/boot/vmlinuz-*`` and ``/boot/initramfs-*``."""
    from composer.diff.iso import iso_records
    from composer.diff.source import Budget, DiffLimits, FileBytes

    with image.open("rb") as handle:
        source = FileBytes(handle, 0, os.fstat(handle.fileno()).st_size, str(image))
        records = iso_records(source, Budget(DiffLimits(), "the image"))
        kernel = next((r for r in records if r.path.startswith("/boot/vmlinuz-")), None)
        initrd = next((r for r in records if r.path.startswith("/boot/initramfs-")), None)
        if kernel is None or initrd is None:
            return None
        start = initrd.extent * 2048
        unpacked = 4 * initrd.size
        if initrd.size >= 18 and source.read_at(start, 2) == b"\x1f\x8b":
            # gzip's trailer: the unpacked size modulo 2^32 (an initramfs is far smaller)
            unpacked = int.from_bytes(source.read_at(start + initrd.size - 4, 4), "little")
    total = kernel.size + initrd.size + unpacked
    return -(-total // (1 << 20)) + MEMORY_HEADROOM_MB


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
    if settings.cpus < 1:
        raise UsageError("--cpus must be at least 1")
    if settings.ssh_port is not None and not 1 <= settings.ssh_port <= 65535:
        raise UsageError(f"--ssh-port {settings.ssh_port} is not a TCP port (1-65535)")
    command = [QEMU[settings.arch], "-m", str(settings.memory_mb), "-nographic", "-no-reboot"]
    if settings.arch == "aarch64":
        command += ["-machine", "virt"]
    if settings.kvm:
        command += ["-accel", "kvm", "-cpu", "host"]
    elif settings.arch == "aarch64":
        command += ["-cpu", "max"]
    if settings.cpus > 1:
        command += ["-smp", str(settings.cpus)]
    if settings.firmware_path is not None:
        if not settings.firmware_path.is_file():
            raise UsageError(f"--firmware-path {settings.firmware_path}: no such file")
        command += ["-bios", os.fspath(settings.firmware_path)]
    elif settings.firmware == "uefi":
        firmware = firmware_file(settings.arch)
        if firmware is None:
            raise MissingToolError(f"no UEFI firmware for {settings.arch} found (apt-get install "
                                   f"{UEFI_PACKAGE[settings.arch]})")
        command += ["-bios", firmware]
    nic = "user,model=virtio-net-pci"
    if settings.ssh_port is not None:
        nic += f",hostfwd=tcp:127.0.0.1:{settings.ssh_port}-:22"
    command += ["-nic", nic]
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
    return command + list(settings.extra)


def require_qemu(arch: str) -> None:
    if shutil.which(QEMU.get(arch, "")) is None:
        raise MissingToolError(f"{QEMU.get(arch, 'qemu')} is not installed (apt-get install "
                               f"{QEMU_PACKAGE.get(arch, 'qemu-system')})")


def check_memory(image: Path, settings: VmSettings) -> None:
    """Refuse a memory size the image cannot boot in, before qemu hangs or loops."""
    needed = minimum_memory_mb(image)
    if needed is not None and settings.memory_mb < needed:
        raise UsageError(f"--memory {settings.memory_mb}: {image.name} needs at least {needed} "
                         "MB (its root filesystem is unpacked into RAM)")


def console_hints(settings: VmSettings) -> list[str]:
    """What to tell the person at the terminal before the console takes it over."""
    hints = ["serial console on this terminal: quit qemu with Ctrl-A X, "
             "or power the guest off with `poweroff`"]
    if settings.ssh_port is not None:
        hints.append(f"SSH: ssh -p {settings.ssh_port} root@127.0.0.1 (guest port 22)")
    return hints


def start_vm(image: Path, settings: VmSettings) -> int:
    """Run qemu in the foreground on this terminal; its exit status."""
    command = qemu_command(image, settings)
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
    for output, path in recorded_outputs(document):
        kind = output.optional("format")
        if kind is None or kind.raw() != "iso":
            continue
        isos[output.field("arch").str(max_len=64)] = path
    if not isos:
        raise UsageError(f"{target}: the build has no ISO output (add {{format: iso}} to outputs)")
    chosen = arch or ("x86_64" if "x86_64" in isos else sorted(isos)[0])
    if chosen not in isos:
        raise UsageError(f"{target}: no ISO for {chosen} (built: {clip(', '.join(sorted(isos)))})")
    return target / isos[chosen], chosen
