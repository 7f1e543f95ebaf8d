"""Variant presets: defaults a variant fills in for keys the profile leaves out.

A preset never overrides what the user wrote; it only supplies missing keys (inside
mappings too; a list the profile writes replaces the preset's whole). The README's
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
# EFI stub the UEFI loader is built on (see composer/build/boot.py).
BOOT_PACKAGES = ["syslinux", "gummiboot"]

PRESETS: dict[str, dict[str, Any]] = {
    "minirootfs": {
        "base": "minirootfs",
        "outputs": [{"format": "tar", "compression": "gzip"}],
    },
    "virt": {
        "packages": ["alpine-base", "linux-virt", *BOOT_PACKAGES],
        "services": {"sysinit": ["devfs", "dmesg", "mdev"], "boot": ["hostname", "modules"]},
        "overlay": _CONSOLES,
        "outputs": [{"format": "iso", "boot": ["bios", "uefi"], "kernel": "virt",
                     "cmdline": "console=ttyS0,115200 quiet"}],
    },
    "standard": {
        "packages": ["alpine-base", "linux-lts", *BOOT_PACKAGES],
        "services": {"sysinit": ["devfs", "dmesg", "mdev", "hwdrivers"],
                     "boot": ["hostname", "modules"]},
        "overlay": _CONSOLES,
        # The last console= is /dev/console (the screen); the serial port gets kernel messages.
        "outputs": [{"format": "iso", "boot": ["bios", "uefi"], "kernel": "lts",
                     "cmdline": "console=ttyS0,115200 console=tty0 quiet"}],
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


def apply_preset(data: dict[str, Any]) -> dict[str, Any]:
    """Fill the keys the profile leaves out from its variant's preset."""
    variant = data.get("variant", "minirootfs")
    preset = PRESETS.get(variant) if isinstance(variant, str) else None
    if preset is None:
        return data
    return _fill(data, preset)


def _fill(data: dict[str, Any], preset: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the keys it lacks taken from ``preset``; mappings both have are filled
    the same way (a profile's ``overlay: {hostname: …}`` keeps the preset's consoles)."""
    merged = dict(data)
    for key, value in preset.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(merged[key], dict) and isinstance(value, dict):
            merged[key] = _fill(merged[key], value)
    return merged
