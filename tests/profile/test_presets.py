"""A variant's preset is the bottom layer of the profile (issue 14 item 2): what the profile
writes is added to the preset's lists, and '-name' / '-/path' removes a preset item."""

from __future__ import annotations

from composer.profile.model import Profile
from composer.profile.variants import MACHINE_SERVICES, serial_inittab

SERIAL_GETTY = "ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100"


def virt(**fields: object) -> Profile:
    return Profile.model_validate({"name": "v", "variant": "virt", **fields})


def inittab(profile: Profile, arch: str) -> str | None:
    return next((f.content for f in profile.overlay.files
                 if f.path == "/etc/inittab" and f.arch is not None and arch in f.arch), None)


def test_one_added_service_keeps_every_preset_runlevel() -> None:
    """The README's example: ``services: {default: [sshd]}``."""
    p = virt(services={"default": ["sshd"]})
    assert p.services == {**MACHINE_SERVICES, "default": [*MACHINE_SERVICES["default"], "sshd"]}
    assert p.services["sysinit"] == ["devfs", "dmesg", "mdev", "hwdrivers"]
    assert {"hostname", "modules"} <= set(p.services["boot"])


def test_one_overlay_file_keeps_the_serial_inittab() -> None:
    p = virt(overlay={"files": [{"path": "/etc/motd", "content": "welcome\n"}]})
    assert inittab(p, "x86_64") == serial_inittab("ttyS0")
    assert SERIAL_GETTY in (inittab(p, "x86_64") or "")
    assert "ttyAMA0::respawn:/sbin/getty" in (inittab(p, "aarch64") or "")
    assert [f.path for f in p.overlay.files] == [
        "/etc/inittab", "/etc/inittab", "/etc/network/interfaces", "/etc/motd"]


def test_a_preset_item_is_removed_only_when_named_with_a_dash() -> None:
    p = virt(packages=["chrony", "-alpine-base"],
             services={"default": ["-crond", "chronyd"], "sysinit": ["-hwdrivers"]},
             overlay={"files": ["-/etc/network/interfaces"]})
    assert p.packages == ["chrony"]
    assert p.services["default"] == ["acpid", "chronyd"]
    assert p.services["sysinit"] == ["devfs", "dmesg", "mdev"]
    assert p.services["boot"] == MACHINE_SERVICES["boot"]
    assert [f.path for f in p.overlay.files] == ["/etc/inittab", "/etc/inittab"]


def test_packages_merge_like_runlevels() -> None:
    assert virt(packages=["openssh", "curl"]).packages == ["alpine-base", "openssh", "curl"]
    assert virt(packages=["alpine-base"]).packages == ["alpine-base"]  # listed once
    # A removal matches the name whatever version constraint the preset or the profile wrote.
    assert virt(packages=["-alpine-base>=3"]).packages == []
