"""GPT disk assembler: sgdisk finds no problem and reads back names, types, GUIDs and sizes;
each partition's bytes sit at the offsets returned; the disk is the same for the same seed;
a disk too small says how large it must be."""

from __future__ import annotations

import hashlib
import io
import random
import re
import uuid
from pathlib import Path

import pytest

from composer.errors import OutputError
from composer.writers.disk import (
    ESP_TYPE,
    LINUX_DATA_TYPE,
    MIB,
    READ_ONLY,
    ROOT_TYPES,
    ROOT_VERITY_TYPES,
    VAR_TYPE,
    DiskLayout,
    DiskPartition,
    DiskSizeError,
    disk_layout,
    write_gpt_disk,
)
from tests.helpers.tools import run_tool

ESP = random.Random(1).randbytes(3 * MIB - 5)
ROOT = random.Random(2).randbytes(5 * MIB + 123)
HASHES = random.Random(3).randbytes(40960)


def _partitions(arch: str = "x86_64") -> list[DiskPartition]:
    return [
        DiskPartition("esp", ESP_TYPE, 4 * MIB, io.BytesIO(ESP)),
        DiskPartition("root", ROOT_TYPES[arch], len(ROOT), io.BytesIO(ROOT),
                      attributes=READ_ONLY),
        DiskPartition("root-verity", ROOT_VERITY_TYPES[arch], len(HASHES), io.BytesIO(HASHES),
                      attributes=READ_ONLY),
        DiskPartition("var", VAR_TYPE, 2 * MIB, None),
    ]


def _write(path: Path, partitions: list[DiskPartition], **options: object) -> DiskLayout:
    with path.open("wb") as out:
        return write_gpt_disk(partitions, out, seed=b"seed", **options)  # type: ignore[arg-type]


def _sgdisk(*args: str) -> str:
    return run_tool("sgdisk", "gdisk", *args).stdout


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_sgdisk_reads_the_layout(tmp_path: Path, arch: str) -> None:
    path = tmp_path / "disk.img"
    layout = _write(path, _partitions(arch))
    assert path.stat().st_size == layout.disk_size == 15 * MIB
    assert "No problems found." in _sgdisk("-v", str(path))
    rows = re.findall(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+\S+ \S+\s+(\w{4})\s+(\S+)$",
                      _sgdisk("-p", str(path)), re.MULTILINE)
    codes = {"x86_64": ("8304", "830C"), "aarch64": ("8305", "830E")}[arch]
    assert rows == [("1", "2048", "10239", "EF00", "esp"),
                    ("2", "10240", "22527", codes[0], "root"),
                    ("3", "22528", "24575", codes[1], "root-verity"),
                    ("4", "24576", "28671", "8310", "var")]
    for number, placed in enumerate(layout.partitions, 1):
        info = _sgdisk("-i", str(number), str(path))
        assert f"Partition GUID code: {str(placed.type_guid).upper()}" in info
        assert f"Partition unique GUID: {str(placed.unique_guid).upper()}" in info
        assert f"First sector: {placed.offset // 512} " in info
        assert f"Partition size: {placed.size // 512} sectors" in info
    assert "Attribute flags: 1000000000000000" in _sgdisk("-i", "2", str(path))
    assert f"Disk identifier (GUID): {str(layout.disk_guid).upper()}" in _sgdisk("-p", str(path))


def test_partition_bytes_at_the_returned_offsets(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    layout = _write(path, _partitions())
    disk = path.read_bytes()
    for name, content in (("esp", ESP), ("root", ROOT), ("root-verity", HASHES), ("var", b"")):
        placed = layout.partition(name)
        assert placed.offset % MIB == 0 and placed.size % MIB == 0
        assert disk[placed.offset:placed.offset + len(content)] == content
        assert disk[placed.offset + len(content):placed.offset + placed.size] == bytes(
            placed.size - len(content))
    assert layout.partition("root").size == 6 * MIB


def test_same_seed_same_bytes_and_stream_equals_file(tmp_path: Path) -> None:
    first, second = tmp_path / "a.img", tmp_path / "b.img"
    _write(first, _partitions())
    _write(second, _partitions())
    assert first.read_bytes() == second.read_bytes()

    class Stream(io.BytesIO):
        def seekable(self) -> bool:
            return False

    stream = Stream()
    write_gpt_disk(_partitions(), stream, seed=b"seed")
    assert hashlib.sha256(stream.getvalue()).digest() == hashlib.sha256(
        first.read_bytes()).digest()
    other = disk_layout(_partitions(), seed=b"other")
    ours = disk_layout(_partitions(), seed=b"seed")
    assert other.disk_guid != ours.disk_guid
    assert {p.unique_guid for p in other.partitions}.isdisjoint(
        p.unique_guid for p in ours.partitions)
    assert len({p.unique_guid for p in ours.partitions}) == 4


def test_given_guid_and_larger_disk(tmp_path: Path) -> None:
    chosen = uuid.UUID("01234567-89ab-4cde-8f01-23456789abcd")
    parts = [DiskPartition("data", LINUX_DATA_TYPE, MIB, io.BytesIO(b"x"), uuid=chosen)]
    path = tmp_path / "disk.img"
    layout = _write(path, parts, disk_size=64 * MIB)
    assert path.stat().st_size == 64 * MIB
    assert layout.partitions[0].unique_guid == chosen
    assert "No problems found." in _sgdisk("-v", str(path))
    assert f"Partition unique GUID: {str(chosen).upper()}" in _sgdisk("-i", "1", str(path))


def test_too_small_disk_names_the_size_needed() -> None:
    with pytest.raises(DiskSizeError) as caught:
        disk_layout(_partitions(), disk_size=14 * MIB, seed=b"seed")
    assert str(caught.value) == ("disk: size 14680064 bytes is too small for the partitions; "
                                 "it needs at least 15728640 bytes (15 MiB)")
    with pytest.raises(DiskSizeError) as odd:
        write_gpt_disk(_partitions(), io.BytesIO(), disk_size=20 * MIB + 1, seed=b"seed")
    assert str(odd.value) == f"disk: size {20 * MIB + 1} is not a multiple of 512 bytes"


def test_contents_larger_than_the_partition_are_refused() -> None:
    parts = [DiskPartition("esp", ESP_TYPE, MIB, io.BytesIO(bytes(MIB) + b"x"))]
    with pytest.raises(OutputError) as caught:
        write_gpt_disk(parts, io.BytesIO(), seed=b"seed")
    assert str(caught.value) == ("disk: the contents of partition 'esp' are larger than its "
                                 "1048576 bytes")
    with pytest.raises(OutputError) as empty:
        disk_layout([DiskPartition("esp", ESP_TYPE, 0, None)], seed=b"seed")
    assert str(empty.value) == "disk: partition 'esp' has size 0; it must be positive"
