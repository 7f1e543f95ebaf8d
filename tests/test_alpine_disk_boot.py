"""Issue 17: a virt disk image of Alpine's own packages and kernel, booted for real.

Built by the CLI from ``profiles/virt.yaml`` with ``format: disk`` (raw and qcow2) and a data
partition, from the real signed 3.19.1 repository and the real linux-virt 6.18 kernel
(tests/helpers/alpine_virt.py; ``device-mapper`` is Debian's dmsetup wrapped under Alpine's
package name, since the fixture repository has none). Started with the command
``alpine-composer boot --print`` gives: UEFI (OVMF) reaches the login prompt, the root is
the squashfs on the dm-verity device, /var is writable, the data partition is formatted on
first boot and keeps what was written across a reboot; a flipped byte in the root stops the
boot with the kernel's verity error. The images pass sgdisk, fsck.fat, unsquashfs,
veritysetup and qemu-img.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from composer.vm import MissingToolError
from composer.vm_secboot import virt_fw_vars
from tests.conftest import REPO, require_shared, run_cli
from tests.helpers.alpine_virt import alpine_virt_repositories
from tests.helpers.apkrepo import signing_key
from tests.helpers.bootpkgs import Unavailable, host_dmsetup_package
from tests.helpers.qemu import missing_tools
from tests.helpers.sbkeys import make_identity
from tests.helpers.vmconsole import Guest

pytestmark = pytest.mark.slow

PASSWORD = "alpine-composer"
LOGIN_TIMEOUT = 400.0
SECTOR = 512


@dataclass(frozen=True)
class RealDisk:
    out: Path
    raw: Path
    qcow2: Path
    tar: Path
    signed: Path
    """A Secure Boot signed qcow2 (the key given in an environment variable)."""
    key_pem: bytes


@pytest.fixture(scope="module")
def real_disk(tmp_path_factory: pytest.TempPathFactory) -> RealDisk:
    fixtures = require_shared()
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    try:
        dmsetup = host_dmsetup_package()
    except Unavailable as exc:
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("real-disk")
    repos = alpine_virt_repositories(fixtures, root / "boot-repo", signing_key("boot"),
                                     extra=[dmsetup])
    folder = root / "profile"
    fields = repos.profile_fields(folder)
    password = subprocess.run(["openssl", "passwd", "-6", "-salt", "composertest", PASSWORD],
                              capture_output=True, text=True, check=True).stdout.strip()
    data = {"mount": "/data", "size": "64MiB"}
    profile = folder / "disk.yaml"
    profile.write_text(json.dumps({
        "name": "disk", "extends": os.fspath(REPO / "profiles" / "virt-disk.yaml"), **fields,
        "accounts": {"root": {"password": password}},
        "outputs": [{"format": "disk", "data": data},
                    {"format": "disk", "image": "qcow2", "data": data},
                    {"format": "tar", "compression": "none"}],
    }))
    built = run_cli("build", profile, "--output-dir", root / "out", "--cache-dir", root / "cache")
    assert built.returncode == 0, built.stderr
    keys = make_identity()
    (folder / "db.crt").write_bytes(keys.cert_pem)
    signed = folder / "signed.yaml"
    signed.write_text(json.dumps({
        "name": "signed", "extends": os.fspath(REPO / "profiles" / "virt-disk.yaml"), **fields,
        "accounts": {"root": {"password": password}},
        "outputs": [{"format": "disk", "image": "qcow2",
                     "secure_boot": {"key_env": "COMPOSER_TEST_DB_KEY", "cert": "db.crt"}}]}))
    built = run_cli("build", signed, "--output-dir", root / "out", "--cache-dir", root / "cache",
                    env={"COMPOSER_TEST_DB_KEY": keys.key_pem.decode()})
    assert built.returncode == 0, built.stderr
    out = root / "out" / "disk"
    return RealDisk(out=out, raw=next(out.glob("*.img")), qcow2=next(out.glob("*.qcow2")),
                    tar=next(out.glob("*.tar")),
                    signed=next((root / "out" / "signed").glob("*.qcow2")), key_pem=keys.key_pem)


def _partitions(image: Path) -> dict[str, tuple[int, int]]:
    """name → (offset, size) in bytes, as sgdisk reads the GPT."""
    listing = subprocess.run(["sgdisk", "-p", str(image)], capture_output=True, text=True,
                             check=True).stdout
    found = {}
    for line in listing.splitlines():
        words = line.split()
        if len(words) >= 7 and words[0].isdigit():
            first, last = int(words[1]), int(words[2])
            found[words[-1]] = (first * SECTOR, (last - first + 1) * SECTOR)
    return found


def _extract(image: Path, name: str, to: Path) -> Path:
    offset, size = _partitions(image)[name]
    with open(image, "rb") as fh:
        fh.seek(offset)
        to.write_bytes(fh.read(size))
    return to


def boot_command(disk: RealDisk, image: Path, *flags: str) -> list[str]:
    """What ``alpine-composer boot --print`` runs for ``image``."""
    printed = run_cli("boot", image, "--print", "--memory", "512", *flags)
    assert printed.returncode == 0, printed.stderr
    return shlex.split(printed.stdout)


def _writable(command: list[str], image: Path, copy: Path) -> list[str]:
    """The same command on a writable copy of the image (``boot`` always uses a snapshot)."""
    shutil.copyfile(image, copy)
    return [w.replace(os.fspath(image), os.fspath(copy)).replace(",snapshot=on", "")
            for w in command]


def _login(guest: Guest) -> None:
    guest.expect(r"alpine-virt login: ", timeout=LOGIN_TIMEOUT)
    mark = guest.send("root\n")
    guest.expect("Password: ", after=mark, timeout=60)
    mark = guest.send(PASSWORD + "\n")
    guest.expect(r"alpine-virt:~# ", after=mark, timeout=60)


def test_verified_root_boots_with_writable_var_and_a_persistent_data_partition(
        real_disk: RealDisk, tmp_path: Path) -> None:
    reason = missing_tools("uefi")
    if reason:
        pytest.skip(reason)
    command = _writable(boot_command(real_disk, real_disk.raw), real_disk.raw,
                        tmp_path / "disk.img")
    cmdline = _uki_cmdline(real_disk.raw, tmp_path)
    roothash = next(w for w in cmdline.split() if w.startswith("roothash=")).split("=", 1)[1]
    with Guest(command, monitor=tmp_path / "monitor", name="disk") as guest:
        _login(guest)
        address = guest.run("ip -4 -o addr show eth0", timeout=60)
        assert "inet 10.0.2.15/24" in address, address  # DHCP from the writable /etc and /var
        mounts = guest.run("cat /proc/mounts")
        assert "/dev/mapper/root /media/root-ro squashfs ro" in mounts, mounts
        assert "overlay / overlay rw" in mounts, mounts
        assert " /data ext4 rw" in mounts, mounts
        table = guest.run("dmsetup table root").split()
        assert table[2:4] == ["verity", "1"], table
        assert roothash in table and "panic_on_corruption" in table, table
        guest.run("echo written >/var/lib/p")
        assert guest.run("cat /var/lib/p").strip() == "written"
        guest.run("echo kept >/data/p; sync")
        assert guest.run("cat /data/p").strip() == "kept"
        guest.send("poweroff\n")
        assert guest.wait_exit(120) == 0
    with Guest(command, monitor=tmp_path / "monitor2", name="disk-again") as guest:
        _login(guest)
        assert guest.run("cat /data/p").strip() == "kept"
        assert "formatting the data partition" not in guest.text
        assert guest.run("ls /var/lib/p 2>&1").strip().endswith("No such file or directory")


def test_a_flipped_byte_in_the_root_stops_the_boot(real_disk: RealDisk, tmp_path: Path) -> None:
    reason = missing_tools("uefi")
    if reason:
        pytest.skip(reason)
    copy = tmp_path / "flipped.img"
    command = _writable(boot_command(real_disk, real_disk.raw), real_disk.raw, copy)
    offset, _ = _partitions(copy)["root-x86-64"]
    with open(copy, "r+b") as fh:
        fh.seek(offset + 100)
        byte = fh.read(1)
        fh.seek(offset + 100)
        fh.write(bytes([byte[0] ^ 0x01]))
    with Guest(command, monitor=tmp_path / "monitor", name="flipped") as guest:
        guest.expect(r"Kernel panic - not syncing: dm-verity device corrupted", timeout=300)
        guest.wait_exit(120)
        assert "login:" not in guest.text


def _uki(image: Path, tmp_path: Path) -> Path:
    """The UKI in a raw image's ESP, copied out with mtools."""
    esp = _extract(image, "esp", tmp_path / "esp.fat")
    uki = tmp_path / "uki.efi"
    subprocess.run(["mcopy", "-n", "-o", "-i", str(esp), "::EFI/BOOT/BOOTX64.EFI", str(uki)],
                   check=True)
    return uki


def _uki_cmdline(image: Path, tmp_path: Path) -> str:
    """The .cmdline section of the UKI in the image's ESP (read with mtools and objcopy)."""
    uki = _uki(image, tmp_path)
    section = tmp_path / "cmdline"
    subprocess.run(["objcopy", "-O", "binary", "--only-section=.cmdline", str(uki), str(section)],
                   check=True)
    return section.read_text()


def _listing_from_tar(tar: Path) -> set[tuple[str, ...]]:
    rows = set()
    with tarfile.open(tar) as archive:
        for member in archive:
            name = "/" + member.name.removeprefix("./").rstrip("/")
            if name in ("/", "/."):
                continue
            kind = ("d" if member.isdir() else "l" if member.issym() else
                    "c" if member.ischr() else "b" if member.isblk() else
                    "p" if member.isfifo() else "-")
            size = "" if kind in "dcbl" else str(member.size)
            target = member.linkname if member.issym() else ""
            if member.islnk():
                kind, size = "-", str(archive.getmember(member.linkname).size)
            rows.add((kind, oct(member.mode & 0o7777), f"{member.uid}/{member.gid}", size, name,
                      target))
    return rows


def _listing_from_squashfs(image: Path) -> set[tuple[str, ...]]:
    text = subprocess.run(["unsquashfs", "-lln", "-d", "", str(image)], capture_output=True,
                          text=True, check=True).stdout
    rows = set()
    bits = {"s": 0o4000, "S": 0o4000, "t": 0o1000, "T": 0o1000}
    for line in text.splitlines():
        words = line.split(None, 5)
        if len(words) < 6 or len(words[0]) != 10:
            continue
        perm, owner, size, _, _, rest = words
        name, _, target = rest.partition(" -> ")
        mode = 0
        for index, char in enumerate(perm[1:]):
            if char in "rwxst":
                mode |= 1 << (8 - index)
        if perm[3] in "sS":
            mode = (mode & ~0o100 if perm[3] == "S" else mode) | 0o4000
        if perm[6] in "sS":
            mode = (mode & ~0o010 if perm[6] == "S" else mode) | 0o2000
        if perm[9] in "tT":
            mode = (mode & ~0o001 if perm[9] == "T" else mode) | bits[perm[9]]
        if name in ("", "/"):
            continue
        kind = perm[0]
        size = "" if kind in "dcbl" else size
        rows.add((kind, oct(mode), owner, size, name, target))
    return rows


def test_the_images_pass_the_real_tools(real_disk: RealDisk, tmp_path: Path) -> None:
    for tool in ("sgdisk", "fsck.fat", "unsquashfs", "veritysetup", "qemu-img", "mcopy",
                 "objcopy", "objdump", "osslsigncode"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    verify = subprocess.run(["sgdisk", "-v", str(real_disk.raw)], capture_output=True, text=True)
    assert verify.returncode == 0 and "No problems found" in verify.stdout, verify.stdout
    assert set(_partitions(real_disk.raw)) == {"esp", "root-x86-64", "root-x86-64-verity", "data"}
    esp = _extract(real_disk.raw, "esp", tmp_path / "esp.fat")
    fsck = subprocess.run(["fsck.fat", "-n", str(esp)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    root = _extract(real_disk.raw, "root-x86-64", tmp_path / "root.squashfs")
    hashes = _extract(real_disk.raw, "root-x86-64-verity", tmp_path / "root.verity")
    roothash = next(w for w in _uki_cmdline(real_disk.raw, tmp_path).split()
                    if w.startswith("roothash=")).split("=", 1)[1]
    checked = subprocess.run(["veritysetup", "verify", str(root), str(hashes), roothash],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert _listing_from_squashfs(root) == _listing_from_tar(real_disk.tar)
    check = subprocess.run(["qemu-img", "check", str(real_disk.qcow2)], capture_output=True,
                           text=True)
    assert check.returncode == 0 and "No errors were found" in check.stdout, check.stdout
    same = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(real_disk.raw),
                           str(real_disk.qcow2)], capture_output=True, text=True)
    assert same.returncode == 0 and "Images are identical" in same.stdout, same.stdout
    headers = subprocess.run(["objdump", "-h", str(_uki(real_disk.raw, tmp_path))],
                             capture_output=True, text=True, check=True).stdout
    sections = [w[1] for line in headers.splitlines() if len(w := line.split()) > 1
                and w[0].isdigit()]
    assert sections[-4:] == [".osrel", ".cmdline", ".initrd", ".linux"], headers
    signed_raw = tmp_path / "signed.img"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(real_disk.signed), str(signed_raw)],
                   check=True)
    crt = next(real_disk.signed.parent.glob("*.crt"))
    signature = subprocess.run(["osslsigncode", "verify", "-CAfile", str(crt), "-in",
                                str(_uki(signed_raw, tmp_path))], capture_output=True, text=True)
    assert signature.returncode == 0 and "Signature verification: ok" in signature.stdout, \
        signature.stdout + signature.stderr


def test_a_signed_disk_boots_under_secure_boot(real_disk: RealDisk, tmp_path: Path) -> None:
    reason = missing_tools("uefi")
    if reason:
        pytest.skip(reason)
    try:
        virt_fw_vars()
    except MissingToolError as exc:
        pytest.skip(exc.message)
    folder = real_disk.signed.parent
    key_body = b"".join(real_disk.key_pem.splitlines()[1:-1])
    for path in folder.rglob("*"):
        if path.is_file():
            assert key_body[:64] not in path.read_bytes().replace(b"\n", b""), path
    assert sorted(p.name for p in folder.glob("*.crt")) == ["signed-3.19.1-x86_64.crt"]
    command = boot_command(real_disk, real_disk.signed, "--secure-boot")
    with Guest(command, monitor=tmp_path / "monitor", name="secure-boot") as guest:
        _login(guest)
        assert "Secure boot enabled" in guest.run("dmesg | grep -i 'secure boot'")


def test_make_boot_starts_the_disk_image(real_disk: RealDisk, tmp_path: Path) -> None:
    """``make boot`` of a profile with a disk output: UEFI and the image as a virtio disk on
    a snapshot (printed with BOOT_FLAGS=--print instead of started)."""
    if shutil.which("make") is None or not (REPO / ".venv" / "bin" / "alpine-composer").exists():
        pytest.skip("make boot needs make and `make install` (the .venv)")
    profile = real_disk.out.parent.parent / "profile" / "disk.yaml"
    made = subprocess.run(["make", "-s", "--no-print-directory", "boot", f"PROFILE={profile}",
                           f"OUTPUT_DIR={real_disk.out.parent}", "BOOT_FLAGS=--print --image disk"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    command = shlex.split(made.stdout.strip().splitlines()[-1])
    assert command[0] == "qemu-system-x86_64" and "-bios" in command
    drive = command[command.index("-drive") + 1]
    assert drive.startswith((f"file={real_disk.raw},format=raw,",
                             f"file={real_disk.qcow2},format=qcow2,")), drive
    assert "snapshot=on" in drive and "if=virtio" in drive
