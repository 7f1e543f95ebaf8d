"""qcow2 writer: ``qemu-img check`` finds no error, ``qemu-img compare`` finds the raw image's
bytes, zero clusters take no space, compressed clusters inflate with QEMU's 4 KiB window, and
equal input gives equal bytes."""

from __future__ import annotations

import hashlib
import io
import json
import random
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from composer.errors import OutputError
from composer.writers.qcow2 import CLUSTER, write_qcow2
from tests.helpers.tools import run_tool

MIB = 1 << 20


def _qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    return run_tool("qemu-img", "qemu-utils", *args)


def _sparse_image(size: int, seed: int) -> bytes:
    """Runs of random, repetitive and long-distance-repetitive bytes among zeros."""
    rng = random.Random(seed)
    raw = bytearray(size)
    for _ in range(12):
        piece = rng.choice([rng.randbytes(rng.randrange(1, 3 * CLUSTER)),
                            rng.randbytes(37) * rng.randrange(1, 4000),
                            rng.randbytes(8192) * rng.randrange(1, 24)])
        offset = rng.randrange(size)
        piece = piece[:size - offset]
        raw[offset:offset + len(piece)] = piece
    return bytes(raw)


def _write(tmp_path: Path, raw: bytes, *, compress: bool, name: str = "ours.qcow2") -> Path:
    source = tmp_path / "raw.img"
    source.write_bytes(raw)
    out = tmp_path / name
    with source.open("rb") as data, out.open("wb") as sink:
        write_qcow2(data, len(raw), sink, compress=compress)
    return out


def _check_and_compare(tmp_path: Path, image: Path) -> dict[str, int]:
    check = _qemu_img("check", "--output=json", str(image))
    report = json.loads(check.stdout)
    assert report.get("corruptions", 0) == 0 and report.get("leaks", 0) == 0, report
    assert "Images are identical." in _qemu_img(
        "compare", "-f", "raw", "-F", "qcow2", str(tmp_path / "raw.img"), str(image)).stdout
    return {key: value for key, value in report.items() if isinstance(value, int)}


@pytest.mark.parametrize("compress", [False, True])
def test_check_compare_and_info(tmp_path: Path, compress: bool) -> None:
    raw = _sparse_image(6 * MIB + 3 * 512, seed=5)
    image = _write(tmp_path, raw, compress=compress)
    report = _check_and_compare(tmp_path, image)
    info = json.loads(_qemu_img("info", "--output=json", str(image)).stdout)
    assert info["virtual-size"] == len(raw)
    assert info["format"] == "qcow2" and info["cluster-size"] == CLUSTER
    assert info["format-specific"]["data"]["compat"] == "1.1"
    stored = sum(1 for at in range(0, len(raw), CLUSTER) if any(raw[at:at + CLUSTER]))
    assert report["allocated-clusters"] == stored
    compressed = report.get("compressed-clusters", 0)
    assert (compressed > 0) if compress else (compressed == 0)


def test_zero_clusters_take_no_space(tmp_path: Path) -> None:
    raw = bytearray(64 * MIB)
    raw[40 * MIB:40 * MIB + 5] = b"hello"
    image = _write(tmp_path, bytes(raw), compress=False)
    _check_and_compare(tmp_path, image)
    # header, L1, one data cluster, one L2 table, refcount table, one refcount block
    assert image.stat().st_size == 6 * CLUSTER


def _compressed_clusters(image: bytes) -> list[bytes]:
    """The stored bytes of every compressed cluster, found through the L1 and L2 tables."""
    l1_size, l1_offset = struct.unpack_from(">IQ", image, 36)
    found = []
    for l1_entry in struct.unpack_from(f">{l1_size}Q", image, l1_offset):
        l2_offset = l1_entry & ((1 << 56) - 512)
        for entry in struct.unpack_from(f">{CLUSTER // 8}Q", image, l2_offset) if l2_offset else ():
            if entry & 1 << 62:
                offset, extra = entry & ((1 << 54) - 1), (entry >> 54) & 0xFF
                found.append(image[offset:(offset & ~511) + (extra + 1) * 512])
    return found


def _inflate_with_4k_window(data: bytes) -> bytes:
    """Inflate as a reader that keeps only a 4 KiB window: small output steps make every
    match go through the window, so a farther one fails ("invalid distance too far back")."""
    inflater = zlib.decompressobj(-12)
    out = bytearray()
    while len(out) < CLUSTER:
        out += inflater.decompress(data, 256)
        data = inflater.unconsumed_tail
    return bytes(out)


def test_compressed_clusters_use_a_4k_window(tmp_path: Path) -> None:
    """Random 8 KiB repeated: a 32 KiB window would shrink it to almost nothing, and the
    format's 4 KiB window (docs/interop/qcow2.txt) could not read it back."""
    raw = random.Random(1).randbytes(8192) * 64 + b"ab" * (4 * CLUSTER)
    image = _write(tmp_path, raw, compress=True)
    _check_and_compare(tmp_path, image)
    clusters = _compressed_clusters(image.read_bytes())
    assert len(clusters) == 8
    assert all(_inflate_with_4k_window(data) == b"ab" * (CLUSTER // 2) for data in clusters)


def test_incompressible_clusters_are_stored_whole(tmp_path: Path) -> None:
    raw = (b"a" * CLUSTER + random.Random(2).randbytes(CLUSTER)
           + random.Random(3).randbytes(512).ljust(CLUSTER, b"\0"))
    image = _write(tmp_path, raw, compress=True)
    report = _check_and_compare(tmp_path, image)
    assert (report["allocated-clusters"], report["compressed-clusters"]) == (3, 2)
    # two compressed clusters, then the whole one on the next cluster boundary
    assert image.read_bytes().find(raw[CLUSTER:2 * CLUSTER]) % CLUSTER == 0


def test_header_fields(tmp_path: Path) -> None:
    image = _write(tmp_path, b"\x01" * 1024, compress=False).read_bytes()
    magic, version, backing, _, bits, size = struct.unpack_from(">4sIQIIQ", image)
    assert (magic, version, backing, bits, size) == (b"QFI\xfb", 3, 0, 16, 1024)
    refcount_order, header_length = struct.unpack_from(">II", image, 96)
    assert (refcount_order, header_length) == (4, 104)
    assert image[104:CLUSTER] == bytes(CLUSTER - 104)


def test_equal_input_gives_equal_bytes(tmp_path: Path) -> None:
    raw = _sparse_image(3 * MIB, seed=9)
    digests = set()
    for name in ("a.qcow2", "b.qcow2"):
        for compress in (False, True):
            digests.add((compress, hashlib.sha256(
                _write(tmp_path, raw, compress=compress, name=name).read_bytes()).hexdigest()))
    assert len(digests) == 2


def test_written_from_the_stream_position(tmp_path: Path) -> None:
    """Offsets inside the image count from where the caller's stream stood."""
    raw = _sparse_image(MIB, seed=4)
    buffer = io.BytesIO()
    buffer.write(b"prefix")
    write_qcow2(io.BytesIO(raw), len(raw), buffer, compress=True)
    alone = io.BytesIO()
    write_qcow2(io.BytesIO(raw), len(raw), alone, compress=True)
    assert buffer.getvalue() == b"prefix" + alone.getvalue()
    assert buffer.tell() == len(buffer.getvalue())


@pytest.mark.parametrize(("size", "given", "message"), [
    (1000, 1000, "qcow2: virtual size 1000 is not a positive multiple of 512"),
    (0, 0, "qcow2: virtual size 0 is not a positive multiple of 512"),
    (8192, 4096, "qcow2: the raw image ended after 4096 bytes; 8192 were announced"),
])
def test_bad_input_is_refused(size: int, given: int, message: str) -> None:
    with pytest.raises(OutputError) as caught:
        write_qcow2(io.BytesIO(bytes(given)), size, io.BytesIO())
    assert str(caught.value) == message


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(sectors=st.integers(1, 6 * MIB // 512), seed=st.integers(0, 2**32),
       compress=st.booleans())
def test_random_sparse_images_read_back(tmp_path_factory: pytest.TempPathFactory,
                                        sectors: int, seed: int, compress: bool) -> None:
    tmp_path = tmp_path_factory.mktemp("qcow2")
    raw = _sparse_image(sectors * 512, seed)
    _check_and_compare(tmp_path, _write(tmp_path, raw, compress=compress))
