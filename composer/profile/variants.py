"""Variant presets: defaults a variant fills in for keys the profile leaves out.

A preset never overrides what the user wrote; it only supplies missing top-level
keys. The README's "Variants" table is generated from the same data.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "minirootfs": {
        "base": "minirootfs",
        "outputs": [{"format": "tar", "compression": "gzip"}],
    },
    "virt": {
        "packages": ["alpine-base", "linux-virt"],
        "services": {"sysinit": ["devfs", "dmesg", "mdev"], "boot": ["hostname", "modules"]},
        "outputs": [{"format": "iso", "boot": ["bios", "uefi"],
                     "cmdline": "console=ttyS0,115200 quiet"}],
    },
    "standard": {
        "packages": ["alpine-base", "linux-lts"],
        "services": {"sysinit": ["devfs", "dmesg", "mdev", "hwdrivers"],
                     "boot": ["hostname", "modules"]},
        "outputs": [{"format": "iso", "boot": ["bios", "uefi"], "cmdline": "quiet"}],
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
    merged = dict(data)
    for key, value in preset.items():
        merged.setdefault(key, value)
    return merged
