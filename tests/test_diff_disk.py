"""Issue 17: ``diff`` (and so ``verify --rebuild``) descends into disk images: the GPT, the
ESP's UKI (its command line as text), the squashfs root member by member, the verity
superblock; qcow2 is read through its tables; hostile images end in one line."""

from __future__ import annotations

import hashlib
import io
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from composer.diff import diff_paths
from composer.diff.disk import Qcow2Bytes
from composer.diff.source import MemoryBytes
from composer.errors import ArchiveError
from composer.tree import FileTree
from composer.writers.disk import ESP_TYPE, ROOT_TYPES, ROOT_VERITY_TYPES, DiskPartition, write_gpt_disk
from composer.writers.fat import FatFile, build_fat
from composer.writers.qcow2 import write_qcow2
from composer.writers.squashfs import write_squashfs
from composer.writers.uki import build_uki
from composer.writers.verity import verity_salt_and_uuid, write_verity
from tests.conftest import run_cli
from tests.helpers.bootpkgs import STUB_FILE

EPOCH = 1725622440


def _tree(*, motd: bytes = b"welcome\n", mode: int = 0o644) -> FileTree:
    tree = FileTree()
    tree.add_dir("etc")
    tree.add_file("etc/motd", motd)
    tree.add_file("etc/hostname", b"alpine\n", mode=mode)
    tree.add_dir("bin")
    tree.add_file("bin/tool", b"\x7fELF" + bytes(9000), mode=0o4755)
    tree.add_symlink("bin/sh", "tool")
    return tree


def _disk(path: Path, tree: FileTree, *, cmdline: str = "console=ttyS0") -> Path:
    stub = Path(STUB_FILE)
    if not stub.exists():
        pytest.skip(f"{STUB_FILE} is missing (apt-get install systemd-boot-efi)")
    root = io.BytesIO()
    size = write_squashfs(tree, root, mtime=EPOCH)
    salt, verity_uuid = verity_salt_and_uuid(hashlib.sha256(root.getvalue()).digest())
    hashes = io.BytesIO()
    verity = write_verity(io.BytesIO(root.getvalue()), size, hashes, salt=salt,
                          uuid=verity_uuid)
    uki = build_uki(stub.read_bytes(), [(".cmdline", f"{cmdline} roothash="
                                         f"{verity.root_hash.hex()}".encode())])
    fat = build_fat([FatFile("EFI/BOOT/BOOTX64.EFI", uki)], serial=1, mtime=EPOCH)
    with path.open("w+b") as out:
        write_gpt_disk([DiskPartition("esp", ESP_TYPE, len(fat.data), io.BytesIO(fat.data)),
                        DiskPartition("root-x86-64", ROOT_TYPES["x86_64"], size,
                                      io.BytesIO(root.getvalue())),
                        DiskPartition("root-x86-64-verity", ROOT_VERITY_TYPES["x86_64"],
                                      verity.hash_size, io.BytesIO(hashes.getvalue()))],
                       out, seed=b"seed")
    return path


def _qcow2(raw: Path, path: Path, *, compress: bool = False) -> Path:
    with raw.open("rb") as source, path.open("wb") as out:
        write_qcow2(source, raw.stat().st_size, out, compress=compress)
    return path


def test_disks_differ_in_members_modes_and_the_command_line(tmp_path: Path) -> None:
    a = _disk(tmp_path / "a.img", _tree())
    b = _disk(tmp_path / "b.img", _tree(motd=b"changed\n", mode=0o600),
              cmdline="console=ttyS0 quiet")
    report = diff_paths(a, b)
    assert report.kind == "disk"
    wheres = {c.where + ": " + c.what for c in report.at("file")}
    assert wheres == {"partition esp!/EFI/BOOT/BOOTX64.EFI: content sha256",
                      "partition root-x86-64!/etc/motd: content sha256",
                      "partition root-x86-64!/etc/hostname: mode"}
    formats = {c.where + ": " + c.what: c for c in report.at("format")}
    cmdline = formats["partition esp!/EFI/BOOT/BOOTX64.EFI PE section .cmdline: text"]
    assert str(cmdline.a).startswith("console=ttyS0 roothash=")
    assert str(cmdline.b).startswith("console=ttyS0 quiet roothash=")
    assert "partition root-x86-64-verity: salt" in formats
    assert "GPT partition 2: unique GUID" not in formats  # seeded the same on both sides
    assert diff_paths(a, _disk(tmp_path / "c.img", _tree())).identical


def test_raw_and_qcow2_of_one_disk_hold_the_same_guest_bytes(tmp_path: Path) -> None:
    raw = _disk(tmp_path / "a.img", _tree())
    ours = _qcow2(raw, tmp_path / "a.qcow2")
    packed = _qcow2(raw, tmp_path / "c.qcow2", compress=True)
    for image in (ours, packed):
        guest = Qcow2Bytes(MemoryBytes(image.read_bytes(), image.name), lambda n, w: None)
        assert guest.read_at(0, guest.size) == raw.read_bytes()
    report = diff_paths(raw, ours)
    assert [(c.where, c.what) for c in report.changes] == [("qcow2", "present")]
    # The same guest bytes, stored differently: only the files' digests differ.
    assert [(c.where, c.what) for c in diff_paths(ours, packed).changes] == [("bytes", "sha256")]
    if shutil.which("qemu-img"):
        theirs = tmp_path / "theirs.qcow2"
        subprocess.run(["qemu-img", "convert", "-c", "-O", "qcow2", str(raw), str(theirs)],
                       check=True)
        guest = Qcow2Bytes(MemoryBytes(theirs.read_bytes(), "theirs"), lambda n, w: None)
        assert guest.read_at(0, guest.size) == raw.read_bytes()


def _header(data: bytes, **changes: int) -> bytes:
    fields = {"version": (4, ">I"), "backing": (8, ">Q"), "cluster_bits": (20, ">I"),
              "crypt": (32, ">I"), "l1_size": (36, ">I"), "l1_at": (40, ">Q"),
              "incompatible": (72, ">Q")}
    out = bytearray(data)
    for name, value in changes.items():
        at, fmt = fields[name]
        struct.pack_into(fmt, out, at, value)
    return bytes(out)


@pytest.mark.parametrize(("changes", "message"), [
    ({"version": 4}, "qcow2 version 4 (2 and 3 are read)"),
    ({"backing": 512}, "qcow2 image with a backing file"),
    ({"crypt": 1}, "qcow2 encryption method 1"),
    ({"cluster_bits": 30}, "qcow2 cluster size 2^30"),
    ({"l1_at": 1 << 40}, "qcow2 L1 table at byte 1099511627776 lies outside the file"),
    ({"l1_size": 0}, "qcow2 L1 table of 0 entries"),
    ({"incompatible": 16}, "qcow2 incompatible features 0x10"),
])
def test_hostile_qcow2_is_one_line(tmp_path: Path, changes: dict[str, int],
                                   message: str) -> None:
    raw = _disk(tmp_path / "a.img", _tree())
    good = _qcow2(raw, tmp_path / "a.qcow2").read_bytes()
    bad = tmp_path / "bad.qcow2"
    bad.write_bytes(_header(good, **changes))
    with pytest.raises(ArchiveError) as caught:
        diff_paths(bad, tmp_path / "a.qcow2")
    assert caught.value.message.startswith(f"{bad}: {message}")
    result = run_cli("diff", bad, tmp_path / "a.qcow2")
    assert result.returncode == ArchiveError.exit_code
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_hostile_partitions_are_named_not_followed(tmp_path: Path) -> None:
    raw = _disk(tmp_path / "a.img", _tree())
    data = bytearray(raw.read_bytes())
    # partition 2 (the root) is entry 1 of the array at LBA 2: its first LBA bytes 32..40
    entry = 2 * 512 + 128 + 32
    root_first = struct.unpack_from("<Q", data, entry)[0]
    data[root_first * 512:root_first * 512 + 4] = b"hsqs"
    struct.pack_into("<I", data, root_first * 512 + 4, 0xFFFFFFFF)  # inode count
    data[root_first * 512 + 40:root_first * 512 + 48] = b"\xff" * 8  # bytes used
    broken = tmp_path / "broken.img"
    broken.write_bytes(bytes(data))
    with pytest.raises(ArchiveError):
        diff_paths(raw, broken)
    struct.pack_into("<Q", data, entry + 8, 1 << 40)  # its last LBA far past the end
    outside = tmp_path / "outside.img"
    outside.write_bytes(bytes(data))
    report = diff_paths(raw, outside)
    found = {(c.where, c.what): c for c in report.changes}
    assert found[("partition root-x86-64", "contents")].b == "not read (outside the disk)"


def test_verify_rebuild_names_what_differs_inside_a_disk(tmp_path: Path) -> None:
    from composer.verify import explain_difference

    published = _qcow2(_disk(tmp_path / "a.img", _tree()), tmp_path / "a.qcow2")
    rebuilt = _qcow2(_disk(tmp_path / "b.img", _tree(motd=b"changed\n")), tmp_path / "b.qcow2")
    explained = explain_difference(published, rebuilt)
    assert "partition root-x86-64!/etc/motd: content sha256 " in explained
    assert explained.startswith("partition esp!/EFI/BOOT/BOOTX64.EFI: content sha256 ")


def test_output_folders_with_signed_disks_pair_the_certificates(tmp_path: Path) -> None:
    from contextlib import ExitStack

    from composer.diff.engine import Side, read_artifact
    from composer.diff.model import compare
    from composer.diff.source import DiffLimits

    a, b = tmp_path / "a.crt", tmp_path / "b.crt"
    a.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    b.write_text("-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n")
    with ExitStack() as stack:
        sa, sb = Side("A", DiffLimits(), stack), Side("B", DiffLimits(), stack)
        read_artifact(sa, a, "disk.crt", sb, b)
        found = compare(sa.snap, sb.snap)
    assert [(c.where, c.what) for c in found.changes] == [("disk.crt", "certificate sha256")]
