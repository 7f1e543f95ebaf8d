"""``alpine-composer boot``: start a built ISO in qemu, as a CD or as a disk, BIOS or UEFI;
or a built disk image (raw or qcow2) with UEFI, optionally under Secure Boot.

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
DISK_FORMATS = ("raw", "qcow2")
DISK_SUFFIXES = {".img": "raw", ".raw": "raw", ".qcow2": "qcow2"}
CERT_FORMAT = "secure-boot-cert"
"""The manifest output format of the PEM certificate a signed disk image's build writes
beside it, as ``<image stem>.crt``."""
CERT_SUFFIX = ".crt"


class MissingToolError(ComposerError):
    """A program the command needs (qemu, firmware) is not installed."""

    exit_code = 1


@dataclass(frozen=True)
class SecureBootFirmware:
    """OVMF built with Secure Boot (read-only code) and a private, writable copy of its
    variable store with the image's certificate enrolled (see :mod:`composer.vm_secboot`)."""

    code: Path
    variables: Path


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
    disk_format: str | None = None
    """``raw`` or ``qcow2`` for a disk image (UEFI only, a virtio disk); None for an ISO."""
    nvme: bool = False
    """Attach a disk image as an NVMe drive instead of virtio."""
    secure_boot: SecureBootFirmware | None = None


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
    _check_disk_settings(settings)
    command = [QEMU[settings.arch], "-m", str(settings.memory_mb), "-nographic", "-no-reboot"]
    if settings.arch == "aarch64":
        command += ["-machine", "virt"]
    elif settings.secure_boot is not None:
        # SMM keeps the variable store out of the guest's reach: without it OVMF's Secure
        # Boot could be switched off from inside the guest.
        command += ["-machine", "q35,smm=on",
                    "-global", "driver=cfi.pflash01,property=secure,value=on"]
    if settings.kvm:
        command += ["-accel", "kvm", "-cpu", "host"]
    elif settings.arch == "aarch64":
        command += ["-cpu", "max"]
    if settings.cpus > 1:
        command += ["-smp", str(settings.cpus)]
    if settings.secure_boot is not None:
        command += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,"
                              f"file={_drive_path(settings.secure_boot.code)}",
                    "-drive", f"if=pflash,format=raw,unit=1,"
                              f"file={_drive_path(settings.secure_boot.variables)}"]
    elif settings.firmware_path is not None:
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
    if settings.disk_format is not None:
        # snapshot=on: the guest's writes go to a temporary overlay, never into the image.
        drive = f"file={_drive_path(image)},format={settings.disk_format},snapshot=on"
        if settings.nvme:
            command += ["-drive", f"{drive},if=none,id=disk0",
                        "-device", "nvme,drive=disk0,serial=composer-disk"]
        else:
            command += ["-drive", f"{drive},if=virtio"]
    elif settings.medium == "cd":
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


def _drive_path(path: Path) -> str:
    """``path`` for a ``-drive`` option list, where a comma separates options."""
    return os.fspath(path).replace(",", ",,")


def _check_disk_settings(settings: VmSettings) -> None:
    if settings.disk_format is None:
        if settings.nvme:
            raise UsageError("--nvme is for disk images; an ISO boots with --as cd or --as disk")
        if settings.secure_boot is not None:
            raise UsageError("--secure-boot is for disk images (their UKI is signed; an ISO's "
                             "boot loader is not)")
        return
    if settings.disk_format not in DISK_FORMATS:
        raise UsageError(f"disk image format {settings.disk_format!r} is not one of "
                         f"{', '.join(DISK_FORMATS)}")
    if settings.firmware != "uefi":
        raise UsageError("a disk image boots with UEFI only: use --firmware uefi")
    if settings.medium != "disk":
        raise UsageError("a disk image is attached as a disk: drop --as cd")
    if settings.secure_boot is not None:
        if settings.arch != "x86_64":
            raise UsageError(f"--secure-boot: only x86_64 (OVMF) for now, not {settings.arch}")
        if settings.firmware_path is not None:
            raise UsageError("--secure-boot brings its own firmware: drop --firmware-path")


def require_qemu(arch: str) -> None:
    if shutil.which(QEMU.get(arch, "")) is None:
        raise MissingToolError(f"{QEMU.get(arch, 'qemu')} is not installed (apt-get install "
                               f"{QEMU_PACKAGE.get(arch, 'qemu-system')})")


def check_memory(image: Path, settings: VmSettings) -> None:
    """Refuse a memory size the image cannot boot in, before qemu hangs or loops."""
    if settings.disk_format is not None:
        return  # a disk image's root stays on the disk
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


@dataclass(frozen=True)
class BootImage:
    """What ``boot`` starts: an ISO or a disk image, its arch, and for a disk image its
    format and the Secure Boot certificate the build wrote beside it (if any)."""

    path: Path
    arch: str
    disk_format: str | None = None
    cert: Path | None = None


def _image_file(target: Path, arch: str | None) -> BootImage:
    guessed = arch or ("aarch64" if target.stem.endswith("-aarch64") else "x86_64")
    if target.suffix == ".iso":
        return BootImage(target, guessed)
    if target.suffix in DISK_SUFFIXES:
        cert = target.with_suffix(CERT_SUFFIX)
        return BootImage(target, guessed, DISK_SUFFIXES[target.suffix],
                         cert if cert.is_file() else None)
    raise UsageError(f"{target}: not an ISO (.iso) or disk image (.img, .qcow2)")


def find_image(target: Path, arch: str | None = None, kind: str | None = None) -> BootImage:
    """The image to boot: ``target`` itself, or the one ``manifest.json`` of the output
    folder ``target`` lists (of ``kind``, iso or disk: else the ISO if there is one; for
    ``arch``: else x86_64 if there is one)."""
    if not target.exists():
        raise UsageError(f"{target}: no such file or folder (build the profile first)")
    if target.is_file():
        return _image_file(target, arch)
    manifest = target / MANIFEST_NAME
    try:
        document = load_json_file(manifest, what=str(manifest), error=UsageError,
                                  max_bytes=MAX_RECORD_BYTES)
    except FileNotFoundError:
        raise UsageError(f"{target}: no {MANIFEST_NAME}; give an output folder or an image "
                         "file") from None
    found: dict[str, dict[str, str]] = {"iso": {}, "disk": {}, CERT_FORMAT: {}}
    for output, path in recorded_outputs(document):
        fmt = output.optional("format")
        if fmt is not None and fmt.raw() in found:
            found[str(fmt.raw())][output.field("arch").str(max_len=64)] = path
    if kind is None:
        kind = "iso" if found["iso"] or not found["disk"] else "disk"
    images = found[kind]
    if not images:
        raise UsageError(f"{target}: the build has no {kind.upper() if kind == 'iso' else kind} "
                         f"output (add {{format: {kind}}} to outputs)")
    chosen = arch or ("x86_64" if "x86_64" in images else sorted(images)[0])
    if chosen not in images:
        raise UsageError(f"{target}: no {kind} image for {chosen} (built: "
                         f"{clip(', '.join(sorted(images)))})")
    image = target / images[chosen]
    if kind == "iso":
        return BootImage(image, chosen)
    cert = found[CERT_FORMAT].get(chosen)
    return BootImage(image, chosen, DISK_SUFFIXES.get(image.suffix, "raw"),
                     target / cert if cert is not None else None)
