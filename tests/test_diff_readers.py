"""The diff's format readers on their own: bytes in, fields and entries out."""

from __future__ import annotations

import hashlib
import io
import uuid

import pytest

from composer.diff.compression import gzip_fields, stream_fields
from composer.diff.cpio import read_cpio
from composer.diff.partitions import gpt_fields, mbr_fields
from composer.diff.report import Change, DiffReport
from composer.diff.source import Budget, DiffLimits, Joined, MemoryBytes
from composer.errors import ArchiveError
from composer.stages.boot import initramfs_entries
from composer.tree import FileTree
from composer.writers.cpio import write_cpio
from composer.writers.gpt import BASIC_DATA_TYPE, ESP_TYPE, GptPartition, partition_tables

SECTORS = 2048


def _disk() -> bytes:
    parts = [GptPartition(ESP_TYPE, uuid.UUID(int=1), 34, 1033, name="EFI system"),
             GptPartition(BASIC_DATA_TYPE, uuid.UUID(int=2), 1034, SECTORS - 34, name="root")]
    tables = partition_tables(parts, disk_sectors=SECTORS, disk_guid=uuid.UUID(int=3))
    disk = bytearray(SECTORS * 512)
    disk[:len(tables.head)] = tables.head
    disk[tables.tail_offset:tables.tail_offset + len(tables.tail)] = tables.tail
    return bytes(disk)


def test_plain_gpt_disk_primary_and_backup() -> None:
    fields = gpt_fields(MemoryBytes(_disk(), "disk"))
    assert fields["GPT header"]["backup LBA"] == SECTORS - 1
    assert fields["GPT header"]["header CRC32 valid"] == "yes"
    assert fields["GPT backup header"]["current LBA"] == SECTORS - 1
    assert fields["GPT backup header"]["entries CRC32 valid"] == "yes"
    assert fields["GPT partition 2"] == {
        "type GUID": str(BASIC_DATA_TYPE).upper(), "unique GUID": str(uuid.UUID(int=2)).upper(),
        "first LBA": 1034, "last LBA": SECTORS - 34, "attributes": "0x0000000000000000",
        "name": "root"}
    assert fields["GPT backup partition 1"]["name"] == "EFI system"
    mbr = mbr_fields(MemoryBytes(_disk(), "disk"))
    assert mbr["MBR"]["boot code"] == "none"
    assert mbr["MBR partition 1"]["type"] == "0xee"


def test_gpt_backup_outside_the_image_is_reported() -> None:
    cut = _disk()[:64 * 512]
    fields = gpt_fields(MemoryBytes(cut, "disk"))
    assert fields["GPT backup header"] == {"signature": "not inside the image"}
    assert gpt_fields(MemoryBytes(bytes(4096), "blank")) == {}
    assert mbr_fields(MemoryBytes(bytes(4096), "blank")) == {}


def test_cpio_reader_reads_what_the_writer_wrote() -> None:
    tree = FileTree()
    tree.add_file("etc/motd", b"hi\n", mode=0o600, uid=5, gid=6)
    tree.add_symlink("bin/sh", "busybox")
    out = io.BytesIO()
    write_cpio(sorted(initramfs_entries(tree), key=lambda e: e.path), out, mtime=1725622440)
    found = read_cpio(MemoryBytes(out.getvalue(), "cpio").stream(), source="cpio",
                      budget=Budget(DiffLimits(), "A"))
    by_path = {e.path: e for e in found.entries}
    motd = by_path["/etc/motd"]
    assert (motd.kind, motd.mode, motd.uid, motd.gid, motd.mtime) == ("file", 0o600, 5, 6,
                                                                      1725622440)
    assert motd.sha256 == hashlib.sha256(b"hi\n").hexdigest()
    assert (by_path["/bin/sh"].kind, by_path["/bin/sh"].link) == ("symlink", "busybox")
    assert (by_path["/dev/console"].kind, by_path["/dev/console"].device) == ("char", "5,1")


@pytest.mark.parametrize(("data", "message"), [
    (b"070701" + b"G" * 104, "has a field that is not hex"),
    (b"070701" + b"0" * 88 + b"00100000" + b"0" * 8, "is outside 1..4097"),
    (b"07070X" + b"0" * 104, "not a cpio newc header"),
    (b"070701" + b"0" * 50, "ends inside a header"),
])
def test_cpio_reader_refuses(data: bytes, message: str) -> None:
    with pytest.raises(ArchiveError, match=message):
        read_cpio(MemoryBytes(data, "cpio").stream(), source="cpio",
                  budget=Budget(DiffLimits(), "A"))


def test_gzip_header_fields() -> None:
    import gzip

    data = gzip.compress(b"x", mtime=1234)
    assert gzip_fields(data) == {"method": 8, "flags": 0, "mtime": 1234, "extra flags": 2,
                                 "os": 255}
    named = b"\x1f\x8b\x08\x08\0\0\0\0\0\x03name.tar\0rest"
    assert stream_fields("gzip", named, 99)["name"] == "name.tar"


def test_joined_ranges_and_bounds() -> None:
    data = MemoryBytes(b"0123456789", "m")
    joined = Joined([data.sub(6, 2, "a"), data.sub(0, 3, "b")], 5, "j")
    assert joined.read_at(0, 5) == b"67012"
    with pytest.raises(ArchiveError, match="lie past its end"):
        joined.read_at(3, 5)
    with pytest.raises(ArchiveError, match="lie outside"):
        data.sub(8, 5, "c")


def test_budget_names_the_limit() -> None:
    budget = Budget(DiffLimits(max_bytes=10, max_entries=1), "the rebuild")
    with pytest.raises(ArchiveError, match="reading the rebuild passes the diff's limit of "
                                           "10 bytes"):
        budget.charge_bytes(11, "x")
    budget.charge_entry("x")
    with pytest.raises(ArchiveError, match="more than the 1 files"):
        budget.charge_entry("x")


def test_report_caps_each_level_and_counts_the_rest() -> None:
    changes = tuple(Change("file", f"/f{i}", "mode", "0o644", "0o600") for i in range(5))
    report = DiffReport("a", "b", "tar", (Change("package", "busybox", "added", None, "1-r0"),
                                          *changes), dropped=(("format", 3),))
    assert report.lines(per_level=2) == [
        "busybox: package added in B (1-r0)", "/f0: mode 0o644 (A) != 0o600 (B)",
        "/f1: mode 0o644 (A) != 0o600 (B)", "… and 3 more file changes",
        "… and 3 more format field changes"]
    assert report.count("format") == 3 and not report.identical
    text = report.format_report(per_level=2)
    assert "tar: differs in 1 packages, 5 files, 3 format fields" in text
