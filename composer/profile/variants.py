"""Variant presets: the bottom layer of every profile.

A preset is laid under the profile by the same rules as a parent profile under the one
that ``extends`` it (:mod:`composer.profile.layers`): keys the profile leaves out are
filled in, ``packages`` and each runlevel of ``services`` accumulate (``-name`` removes a
preset's item), ``overlay.files`` merge by path (``-/etc/inittab`` drops the preset's
file), and ``outputs`` written by the profile replace the preset's. The README's
"Variants" section describes the same data.
"""

from __future__ import annotations

from typing import Any

from composer.profile.layers import merge_layers, package_name

SERIAL_PORTS = {"ttyS0": ["x86_64", "x86", "riscv64", "loongarch64"],
                "ttyAMA0": ["aarch64", "armv7", "armhf"]}
"""The first serial port's name under Linux, by architecture (the 8250 UART on PCs, the
PL011 on qemu's and most Arm boards)."""


def serial_port(arch: str) -> str:
    return next((port for port, arches in SERIAL_PORTS.items() if arch in arches), "ttyS0")


def serial_inittab(port: str) -> str:
    """Alpine's default /etc/inittab with a getty on the first serial port as well: the
    composed system boots straight from the ISO, so its consoles are set here."""
    return f"""\
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
{port}::respawn:/sbin/getty -L 115200 {port} vt100

# Stuff to do for the 3-finger salute
::ctrlaltdel:/sbin/reboot

# Stuff to do before rebooting
::shutdown:/sbin/openrc shutdown
"""


SERIAL_INITTAB = serial_inittab("ttyS0")

NETWORK_INTERFACES = """\
auto lo
iface lo inet loopback

auto eth0
iface eth0 inet dhcp
"""
"""What ``setup-interfaces`` writes for one wired interface: DHCP on eth0 (qemu's user
network, most clouds and LANs answer it)."""

_MACHINE_FILES = [
    *({"path": "/etc/inittab", "content": serial_inittab(port), "mode": "0644", "arch": arches}
      for port, arches in SERIAL_PORTS.items()),
    {"path": "/etc/network/interfaces", "content": NETWORK_INTERFACES, "mode": "0644"},
]

# Alpine's runlevels as its ISOs set them up (aports scripts/genapkovl-*.sh and
# mkimg.base.sh: rc_add), for a machine that boots: devices, modules, clock, hostname,
# logging, network, ACPI power button and cron; and a clean shutdown.
MACHINE_SERVICES: dict[str, list[str]] = {
    "sysinit": ["devfs", "dmesg", "mdev", "hwdrivers"],
    "boot": ["hwclock", "modules", "sysctl", "hostname", "bootmisc", "syslog", "networking"],
    "default": ["acpid", "crond"],
    "shutdown": ["mount-ro", "killprocs", "savecache"],
}
SSH_PACKAGES = ("openssh", "openssh-server")
"""A profile whose packages name one of these gets sshd in the default runlevel (as
``setup-sshd`` does); sshd makes its host keys at first boot."""

# An ISO output's kernel flavor and command line when it names none, by variant. The last
# console= is /dev/console: virt has only the serial port; bare metal shows the screen and
# copies kernel messages to the serial port.
ISO_DEFAULTS: dict[str, dict[str, str]] = {
    "virt": {"kernel": "virt", "cmdline": "console={serial},115200 quiet"},
    "": {"kernel": "lts", "cmdline": "console={serial},115200 console=tty0 quiet"},
}


def iso_defaults(variant: str, arch: str = "x86_64") -> dict[str, str]:
    """``kernel`` and ``cmdline`` for an ISO output of ``variant`` on ``arch`` that leaves
    them out."""
    chosen = ISO_DEFAULTS.get(variant, ISO_DEFAULTS[""])
    return {"kernel": chosen["kernel"],
            "cmdline": chosen["cmdline"].format(serial=serial_port(arch))}


PRESETS: dict[str, dict[str, Any]] = {
    "minirootfs": {
        "base": "minirootfs",
        "outputs": [{"format": "tar", "compression": "gzip"}],
    },
    "virt": {
        "packages": ["alpine-base"],
        "services": MACHINE_SERVICES,
        "overlay": {"files": _MACHINE_FILES},
        "outputs": [{"format": "iso"}],
    },
    "standard": {
        "packages": ["alpine-base"],
        "services": MACHINE_SERVICES,
        "overlay": {"files": _MACHINE_FILES},
        "outputs": [{"format": "iso"}],
    },
    "edge": {
        "branch": "edge",
        "outputs": [{"format": "tar", "compression": "gzip"}],
    },
}
MACHINES = ("virt", "standard")
"""The variants that boot: their presets set up runlevels, consoles and the network."""

DESCRIPTIONS: dict[str, str] = {
    "minirootfs": "Alpine's mini root filesystem plus your packages and overlay; tar output.",
    "virt": "A small VM: linux-virt kernel, serial console, DHCP, sshd with openssh; BIOS and "
            "UEFI ISO.",
    "standard": "Bare metal: linux-lts kernel, screen and serial consoles; BIOS and UEFI ISO.",
    "edge": "The rolling edge branch; reproducible only when every input is pinned.",
}


def preset(variant: str, data: dict[str, Any]) -> dict[str, Any] | None:
    """The preset layer of ``variant`` for a profile whose own keys are ``data``."""
    chosen = PRESETS.get(variant)
    if chosen is None or variant not in MACHINES:
        return chosen
    merged = merge_layers(chosen, {"packages": data.get("packages") or []})
    names = {package_name(p) for p in merged.get("packages", []) if isinstance(p, str)}
    if names & set(SSH_PACKAGES):
        services = dict(chosen["services"])
        services["default"] = [*services["default"], "sshd"]
        return {**chosen, "services": services}
    return chosen


def apply_preset(data: dict[str, Any]) -> dict[str, Any]:
    """Lay the profile's keys over its variant's preset."""
    variant = data.get("variant", "minirootfs")
    layer = preset(variant, data) if isinstance(variant, str) else None
    if layer is None:
        return data
    return merge_layers(layer, data)
