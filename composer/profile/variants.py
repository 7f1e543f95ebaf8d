"""Variant presets: defaults a variant fills in for keys the profile leaves out.

A preset never overrides what the user wrote; it only supplies missing keys (and missing
keys of ``overlay``); a list the profile writes replaces the preset's whole. The README's
"Variants" table is generated from the same data.
"""

from __future__ import annotations

from typing import Any

# Alpine's default /etc/inittab with a getty on the first serial port as well: the
# composed system boots straight from the ISO, so its consoles are set here.
SERIAL_INITTAB = """\
# /etc/inittab

::sysinit:/sbin/openrc sysinit
::sysinit:/sbin/openrc boot
::wait:/sbin/openrc default

# Set up a couple of getty's
tty1::respawn:/sbin/getty 38400 tty1
tty2::respawn:/sbin/getty 38400 tty2
tty3::respawn:/sbin/getty 38400 tty3
tty4::respawn:/sbin/getty 38400 tty4
tty5::respawn:/sbin/getty 38400 tty5
tty6::respawn:/sbin/getty 38400 tty6

# Put a getty on the serial port
ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100

# Stuff to do for the 3-finger salute
::ctrlaltdel:/sbin/reboot

# Stuff to do before rebooting
::shutdown:/sbin/openrc shutdown
"""
_CONSOLES = {"files": [{"path": "/etc/inittab", "content": SERIAL_INITTAB, "mode": "0644"}]}
# What an ISO needs from the repositories to boot: a kernel, ISOLINUX for BIOS and the
# EFI stub the UEFI loader is built on (see composer/stages/boot.py).
BOOT_PACKAGES = ["syslinux", "gummiboot"]

# An ISO output's kernel flavor and command line when it names none, by variant. The last
# console= is /dev/console: virt has only the serial port; bare metal shows the screen and
# copies kernel messages to the serial port.
ISO_DEFAULTS: dict[str, dict[str, str]] = {
    "virt": {"kernel": "virt", "cmdline": "console=ttyS0,115200 quiet"},
    "": {"kernel": "lts", "cmdline": "console=ttyS0,115200 console=tty0 quiet"},
}


def iso_defaults(variant: str) -> dict[str, str]:
    """``kernel`` and ``cmdline`` for an ISO output of ``variant`` that leaves them out."""
    return ISO_DEFAULTS.get(variant, ISO_DEFAULTS[""])


PRESETS: dict[str, dict[str, Any]] = {
    "minirootfs": {
        "base": "minirootfs",
        "outputs": [{"format": "tar", "compression": "gzip"}],
    },
    "virt": {
        "packages": ["alpine-base", "linux-virt", *BOOT_PACKAGES],
        "services": {"sysinit": ["devfs", "dmesg", "mdev"], "boot": ["hostname", "modules"]},
        "overlay": _CONSOLES,
        "outputs": [{"format": "iso", "boot": ["bios", "uefi"]}],
    },
    "standard": {
        "packages": ["alpine-base", "linux-lts", *BOOT_PACKAGES],
        "services": {"sysinit": ["devfs", "dmesg", "mdev", "hwdrivers"],
                     "boot": ["hostname", "modules"]},
        "overlay": _CONSOLES,
        "outputs": [{"format": "iso", "boot": ["bios", "uefi"]}],
    },
    "edge": {
        "branch": "edge",
        "outputs": [{"format": "tar", "compression": "gzip"}],
    },
}

DESCRIPTIONS: dict[str, str] = {
    "minirootfs": "Alpine's mini root filesystem plus your packages and overlay; tar output.",
    "virt": "A small VM: linux-virt kernel, serial console, BIOS and UEFI ISO.",
    "standard": "Bare metal: linux-lts kernel, BIOS and UEFI ISO.",
    "edge": "The rolling edge branch; reproducible only when every input is pinned.",
}


FILLED_INSIDE = ("overlay",)
"""Mappings a preset fills key by key: a profile's ``overlay: {hostname: …}`` keeps the
variant's inittab (``overlay.files`` written by the profile replaces it)."""


def apply_preset(data: dict[str, Any]) -> dict[str, Any]:
    """Fill the keys the profile leaves out from its variant's preset."""
    variant = data.get("variant", "minirootfs")
    preset = PRESETS.get(variant) if isinstance(variant, str) else None
    if preset is None:
        return data
    merged = dict(data)
    for key, value in preset.items():
        if key not in merged:
            merged[key] = value
        elif key in FILLED_INSIDE and isinstance(merged[key], dict):
            merged[key] = {**value, **merged[key]}
    return merged
