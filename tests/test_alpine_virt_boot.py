"""The shipped virt profile on Alpine's own packages and kernel, used as a person would.

Issue 14's "done means": the real signed 3.19.1 repository and the real linux-virt 6.18
kernel (tests/helpers/alpine_virt.py), built by the CLI from ``profiles/virt.yaml`` with
a root password hash and an SSH key, started by ``alpine-composer boot`` (its printed qemu
command, at the least memory ``boot`` accepts) in each of the four ways, reaches the serial
login prompt; on one of them a console login works, the guest has qemu's DHCP address, SSH
with the key works through ``--ssh-port``, and the ACPI power button stops it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from composer.vm import minimum_memory_mb
from tests.conftest import REPO, require_shared, run_cli
from tests.helpers.alpine_virt import alpine_virt_repositories
from tests.helpers.apkrepo import signing_key
from tests.helpers.qemu import MODE_IDS, MODES, missing_tools
from tests.helpers.vmconsole import Guest, free_port

pytestmark = pytest.mark.slow

PASSWORD = "alpine-composer"
LOGIN_TIMEOUT = 400.0


@dataclass(frozen=True)
class RealVirt:
    out: Path
    key: Path


@pytest.fixture(scope="module")
def real_virt(tmp_path_factory: pytest.TempPathFactory) -> RealVirt:
    fixtures = require_shared()
    for tool in ("ssh-keygen", "ssh", "openssl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install openssh-client openssl)")
    root = tmp_path_factory.mktemp("real-virt")
    repos = alpine_virt_repositories(fixtures, root / "boot-repo", signing_key("boot"))
    folder = root / "profile"
    fields = repos.profile_fields(folder)
    key = root / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(key)],
                   check=True)
    password = subprocess.run(["openssl", "passwd", "-6", "-salt", "composertest", PASSWORD],
                              capture_output=True, text=True, check=True).stdout.strip()
    profile = folder / "virt.yaml"
    profile.write_text(json.dumps({
        "name": "virt", "extends": os.fspath(REPO / "profiles" / "virt.yaml"), **fields,
        "packages": ["openssh"],
        "accounts": {"root": {"password": password,
                              "ssh_authorized_keys": [key.with_suffix(".pub").read_text().strip()]}},
    }))
    built = run_cli("build", profile, "--output-dir", root / "out", "--cache-dir", root / "cache")
    assert built.returncode == 0, built.stderr
    return RealVirt(out=root / "out" / "virt", key=key)


def boot_command(build: RealVirt, *flags: str) -> list[str]:
    """What ``alpine-composer boot --print`` runs, at the least memory it accepts."""
    iso = next(build.out.glob("*.iso"))
    memory = minimum_memory_mb(iso)
    assert memory is not None
    printed = run_cli("boot", build.out, "--print", "--memory", str(memory), *flags)
    assert printed.returncode == 0, printed.stderr
    return shlex.split(printed.stdout)


def test_boot_refuses_too_little_memory(real_virt: RealVirt) -> None:
    iso = next(real_virt.out.glob("*.iso"))
    needed = minimum_memory_mb(iso)
    assert needed is not None and 200 < needed < 400
    result = run_cli("boot", real_virt.out, "--print", "--memory", str(needed - 1))
    assert (result.returncode, result.stderr) == (
        2, f"alpine-composer: error: --memory {needed - 1}: {iso.name} needs at least {needed} "
           "MB (its root filesystem is unpacked into RAM)\n")


@pytest.mark.parametrize(("firmware", "medium"), MODES, ids=MODE_IDS)
def test_real_virt_reaches_the_login_prompt(real_virt: RealVirt, tmp_path: Path, firmware: str,
                                            medium: str) -> None:
    reason = missing_tools(firmware)
    if reason:
        pytest.skip(reason)
    command = boot_command(real_virt, "--firmware", firmware, "--as", medium)
    with Guest(command, monitor=tmp_path / "monitor", name=f"{firmware}-{medium}") as guest:
        guest.expect(r"alpine-virt login: ", timeout=LOGIN_TIMEOUT)
        print(f"{firmware}-{medium}: login prompt after {time.monotonic() - guest.started:.1f} s")


def test_console_login_dhcp_ssh_and_acpi_power_off(real_virt: RealVirt, tmp_path: Path) -> None:
    reason = missing_tools("bios")
    if reason:
        pytest.skip(reason)
    port = free_port()
    command = boot_command(real_virt, "--ssh-port", str(port))
    assert f"hostfwd=tcp:127.0.0.1:{port}-:22" in " ".join(command)
    with Guest(command, monitor=tmp_path / "monitor") as guest:
        guest.expect(r"alpine-virt login: ", timeout=LOGIN_TIMEOUT)
        mark = guest.send("root\n")
        guest.expect("Password: ", after=mark, timeout=60)
        mark = guest.send(PASSWORD + "\n")
        guest.expect(r"alpine-virt:~# ", after=mark, timeout=60)
        address = guest.run("ip -4 -o addr show eth0", timeout=60)
        assert "inet 10.0.2.15/24" in address, address
        runlevels = {}
        for level in ("sysinit", "boot", "default", "shutdown"):
            runlevels[level] = set(guest.run(f"ls /etc/runlevels/{level} | cat").split())
        assert runlevels == {  # Alpine's ISO runlevels (item 3)
            "sysinit": {"devfs", "dmesg", "mdev", "hwdrivers"},
            "boot": {"hwclock", "modules", "sysctl", "hostname", "bootmisc", "syslog",
                     "networking"},
            "default": {"acpid", "crond", "sshd"},
            "shutdown": {"mount-ro", "killprocs", "savecache"}}
        ssh = ["ssh", "-p", str(port), "-i", os.fspath(real_virt.key), "-o", "BatchMode=yes",
               "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "ConnectTimeout=20", "root@127.0.0.1"]
        deadline = time.monotonic() + 180
        while True:  # sshd makes its host keys at first boot: give it time
            answer = subprocess.run([*ssh, "cat /etc/alpine-release; id -u"], capture_output=True,
                                    text=True, timeout=120, stdin=subprocess.DEVNULL)
            if answer.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(5)
        assert (answer.returncode, answer.stdout) == (0, "3.19.1\n0\n"), answer.stderr
        wrong = subprocess.run([*ssh[:-1], "-o", "PubkeyAuthentication=no", "root@127.0.0.1",
                                "true"], capture_output=True, text=True, timeout=120,
                               stdin=subprocess.DEVNULL)
        assert wrong.returncode == 255 and "Permission denied" in wrong.stderr
        guest.monitor("system_powerdown")
        assert guest.wait_exit(timeout=180) == 0
