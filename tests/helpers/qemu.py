"""Boot an ISO in real qemu (TCG) and watch the serial console for a marker.

Four ways in, as a user would boot the image: BIOS (SeaBIOS) or UEFI (OVMF), from
a CD drive (El Torito) or as a disk (the isohybrid MBR / GPT). The guest's own init
prints the marker and powers off; ``-no-reboot`` makes qemu exit then. The output is
read as a stream: a kernel panic or a firmware that finds nothing to boot fails at
once, a hang fails at the timeout.
"""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

QEMU_X86 = "qemu-system-x86_64"
OVMF_CANDIDATES = ("/usr/share/ovmf/OVMF.fd", "/usr/share/qemu/OVMF.fd")
FIRMWARES = ("bios", "uefi")
MEDIA = ("cd", "disk")
FATAL = ("Kernel panic", "Boot failed: could not read the boot disk",
         "No bootable device", "isolinux.bin missing or corrupt")


class BootFailure(AssertionError):
    """The guest did not reach the marker; the message carries the console's tail."""


@dataclass(frozen=True)
class BootResult:
    output: str
    seconds: float


def ovmf_path() -> str | None:
    return next((p for p in OVMF_CANDIDATES if os.path.exists(p)), None)


def missing_tools(firmware: str = "bios") -> str | None:
    """Why a boot cannot run here (a skip reason), or None."""
    if shutil.which(QEMU_X86) is None:
        return f"{QEMU_X86} is not installed (apt-get install qemu-system-x86)"
    if firmware == "uefi" and ovmf_path() is None:
        return "OVMF firmware is not installed (apt-get install ovmf)"
    return None


def qemu_command(image: Path, *, firmware: str, medium: str, memory: int = 512) -> list[str]:
    """The qemu command line for one boot mode (no KVM: it does not work on CI machines)."""
    if firmware not in FIRMWARES or medium not in MEDIA:
        raise ValueError(f"unknown boot mode {firmware}/{medium}")
    command = [QEMU_X86, "-m", str(memory), "-nographic", "-no-reboot", "-smp", "1"]
    if firmware == "uefi":
        ovmf = ovmf_path()
        assert ovmf is not None
        command += ["-bios", ovmf]
    if medium == "cd":
        command += ["-cdrom", os.fspath(image), "-boot", "d"]
    elif firmware == "uefi":
        command += ["-drive", f"file={os.fspath(image)},format=raw,if=virtio,readonly=on"]
    else:
        # IDE disks cannot be read-only: a snapshot keeps the image unchanged instead.
        command += ["-drive", f"file={os.fspath(image)},format=raw,media=disk,snapshot=on"]
    return command


def boot(image: Path, *, firmware: str, medium: str, marker: str,
         timeout: float = 120.0) -> BootResult:
    """Boot ``image`` until ``marker`` appears and qemu exits; raise BootFailure otherwise."""
    command = qemu_command(image, firmware=firmware, medium=medium)
    start = time.monotonic()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    assert process.stdout is not None
    output = bytearray()
    seen_at: float | None = None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    try:
        while True:
            now = time.monotonic()
            if now - start > timeout:
                raise BootFailure(f"{firmware}/{medium}: no {marker!r} within {timeout:.0f} s; "
                                  f"console ends with:\n{_tail(output)}")
            if seen_at is not None and now - seen_at > 15:
                break  # the marker is there; a slow poweroff is not a boot failure
            if not selector.select(timeout=1.0):
                if process.poll() is not None:
                    break
                continue
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            output += chunk
            text = output.decode("utf-8", "replace")
            if seen_at is None and marker in text:
                seen_at = time.monotonic()
            for fatal in FATAL:
                if fatal in text and seen_at is None:
                    raise BootFailure(f"{firmware}/{medium}: {fatal!r}; console ends with:\n"
                                      f"{_tail(output)}")
    finally:
        selector.close()
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()
    text = output.decode("utf-8", "replace")
    if marker not in text:
        raise BootFailure(f"{firmware}/{medium}: qemu exited ({process.returncode}) without "
                          f"{marker!r}; console ends with:\n{_tail(output)}")
    return BootResult(output=text, seconds=time.monotonic() - start)


def _tail(output: bytes | bytearray, lines: int = 25) -> str:
    return "\n".join(output.decode("utf-8", "replace").splitlines()[-lines:])
