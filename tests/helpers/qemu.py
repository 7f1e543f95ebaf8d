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

from composer.vm import QEMU, QEMU_PACKAGE, UEFI_PACKAGE, VmSettings, firmware_file, qemu_command

FATAL = ("Kernel panic", "Boot failed: could not read the boot disk",
         "No bootable device", "isolinux.bin missing or corrupt", "Access Denied")
"""Console text that ends a boot at once; "Access Denied" is OVMF refusing an image under
Secure Boot."""


class BootFailure(AssertionError):
    """The guest did not reach the marker; the message carries the console's tail."""


@dataclass(frozen=True)
class BootResult:
    output: str
    seconds: float


def missing_tools(firmware: str = "bios", arch: str = "x86_64") -> str | None:
    """Why a boot cannot run here (a skip reason), or None."""
    if shutil.which(QEMU[arch]) is None:
        return f"{QEMU[arch]} is not installed (apt-get install {QEMU_PACKAGE[arch]})"
    if firmware == "uefi" and firmware_file(arch) is None:
        return f"UEFI firmware is not installed (apt-get install {UEFI_PACKAGE[arch]})"
    return None


def boot(image: Path, *, firmware: str, medium: str, marker: str,
         timeout: float = 120.0, arch: str = "x86_64",
         settings: VmSettings | None = None) -> BootResult:
    """Boot ``image`` until ``marker`` appears and qemu exits; raise BootFailure otherwise.
    ``settings`` replaces the ones ``firmware``, ``medium`` and ``arch`` make."""
    command = qemu_command(image, settings or VmSettings(firmware=firmware, medium=medium,
                                                         memory_mb=512, arch=arch))
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


MODES = [("bios", "cd"), ("bios", "disk"), ("uefi", "cd"), ("uefi", "disk")]
MODE_IDS = [f"{firmware}-{medium}" for firmware, medium in MODES]


def boot_to_marker(image: Path, firmware: str, medium: str, marker: str,
                   timeout: float = 150.0) -> BootResult:
    """Boot until ``<marker>-BIOS`` or ``<marker>-UEFI`` (the firmware the guest saw), or skip
    when qemu or the firmware is not installed. The other firmware's marker must not show:
    a BIOS fallback cannot pass for a UEFI boot."""
    import pytest

    reason = missing_tools(firmware)
    if reason:
        pytest.skip(reason)
    result = boot(image, firmware=firmware, medium=medium, marker=f"{marker}-{firmware.upper()}",
                  timeout=timeout)
    other = "BIOS" if firmware == "uefi" else "UEFI"
    assert f"{marker}-{other}" not in result.output
    print(f"{image.name} {firmware}/{medium}: {result.seconds:.1f} s")
    return result
