"""qcow2 version 3 images (QEMU's docs/interop/qcow2.txt) from a raw disk image, written by
the project so their bytes depend on nothing but the input and the pinned deflate.

Layout, in this order: the header cluster; the L1 table; the data clusters in guest order
(all-zero guest clusters are not stored, so they read as zeros); the L2 tables that map them;
the refcount table; the refcount blocks. 64 KiB clusters, 16-bit refcounts, no backing file,
no snapshots, no header extensions (the zeros after the header are the end marker).

With ``compress`` every guest cluster that deflates smaller than a cluster is stored
compressed: a raw deflate stream whose window is 4 KiB (what QEMU inflates with), packed
byte after byte as QEMU packs them, the descriptor counting the 512-byte sectors it spans;
a host cluster shared by several compressed clusters has one reference per user. Clusters
that do not shrink are stored as they are. Compression runs on worker threads; the bytes do
not depend on their number.

The data is read once, cluster by cluster. Because the header names tables that follow the
data, ``out`` must be seekable: the header and L1 table are written last, at the start.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from composer.errors import OutputError
from composer.writers.compress import deflate_raw

CLUSTER_BITS = 16
CLUSTER = 1 << CLUSTER_BITS
L2_ENTRIES = CLUSTER // 8
REFCOUNT_ORDER = 4
REFCOUNTS_PER_BLOCK = CLUSTER * 8 >> REFCOUNT_ORDER
REFCOUNT_BLOCKS_PER_TABLE_CLUSTER = CLUSTER // 8
DEFLATE_LEVEL = 6
DEFLATE_WINDOW_BITS = 12
SECTOR = 512

_MAGIC = b"QFI\xfb"
_VERSION = 3
_HEADER = struct.Struct(">4sIQIIQIIQQIIQQQQII")
_COPIED = 1 << 63
_COMPRESSED = 1 << 62
_SECTORS_SHIFT = 62 - (CLUSTER_BITS - 8)
_ZERO = bytes(CLUSTER)
_BATCH = 64


def _clusters(raw: BinaryIO, size: int) -> Iterator[list[bytes]]:
    """The guest clusters of ``raw`` in batches, the last one zero-padded."""
    left = size
    while left > 0:
        want = min(CLUSTER * _BATCH, left)
        chunk = raw.read(want)
        if len(chunk) != want:
            raise OutputError(f"qcow2: the raw image ended after {size - left + len(chunk)} "
                              f"bytes; {size} were announced")
        left -= want
        view = memoryview(chunk)
        batch = [bytes(view[offset:offset + CLUSTER]) for offset in range(0, want, CLUSTER)]
        if len(batch[-1]) < CLUSTER:
            batch[-1] = batch[-1].ljust(CLUSTER, b"\0")
        yield batch


def _deflate(cluster: bytes) -> bytes | None:
    """The cluster's compressed form, or None where it would be zero or would not shrink."""
    if cluster == _ZERO:
        return None
    packed = deflate_raw(cluster, level=DEFLATE_LEVEL, window_bits=DEFLATE_WINDOW_BITS)
    return packed if len(packed) < CLUSTER else None


class _Image:
    """The host file as it grows: the write position and each host cluster's refcount."""

    def __init__(self, out: BinaryIO, first_data_cluster: int) -> None:
        self.out = out
        self.base = out.tell()
        self.position = first_data_cluster * CLUSTER
        self.refcounts = [1] * first_data_cluster

    def _reference(self, start: int, end: int) -> None:
        """One more reference to every host cluster that bytes start..end-1 touch."""
        first, last = start >> CLUSTER_BITS, (end - 1) >> CLUSTER_BITS
        if last >= len(self.refcounts):
            self.refcounts.extend([0] * (last + 1 - len(self.refcounts)))
        for index in range(first, last + 1):
            self.refcounts[index] += 1

    def align(self) -> None:
        """Pad to the next cluster boundary (after a run of compressed clusters)."""
        rest = self.position % CLUSTER
        if rest:
            self.out.write(bytes(CLUSTER - rest))
            self.position += CLUSTER - rest

    def cluster(self, data: bytes) -> int:
        """Store one whole cluster; its host offset."""
        self.align()
        offset = self.position
        self.out.write(data)
        self.position += len(data)
        self._reference(offset, self.position)
        return offset

    def compressed(self, data: bytes) -> int:
        """Store compressed bytes right after the previous ones; their L2 descriptor."""
        offset = self.position
        self.out.write(data)
        self.position += len(data)
        self._reference(offset, self.position)
        extra_sectors = (self.position - 1) // SECTOR - offset // SECTOR
        return _COMPRESSED | extra_sectors << _SECTORS_SHIFT | offset


def _refcount_layout(clusters: int) -> tuple[int, int]:
    """Clusters of refcount table and of refcount blocks that cover ``clusters`` and
    themselves."""
    table, blocks = 1, 1
    while True:
        total = clusters + table + blocks
        need_blocks = -(-total // REFCOUNTS_PER_BLOCK)
        need_table = -(-need_blocks // REFCOUNT_BLOCKS_PER_TABLE_CLUSTER)
        if (need_blocks, need_table) == (blocks, table):
            return table, blocks
        table, blocks = max(table, need_table), max(blocks, need_blocks)


def _workers() -> int:
    return max(1, min(4, len(os.sched_getaffinity(0))))


def write_qcow2(raw: BinaryIO, size: int, out: BinaryIO, *, compress: bool = False) -> None:
    """Write the first ``size`` bytes of ``raw`` as a qcow2 v3 image to the seekable ``out``
    (from its current position): virtual size ``size``, which must be a multiple of 512."""
    if size <= 0 or size % SECTOR:
        raise OutputError(f"qcow2: virtual size {size} is not a positive multiple of {SECTOR}")
    guest_clusters = -(-size // CLUSTER)
    l1_size = -(-guest_clusters // L2_ENTRIES)
    l1_clusters = -(-l1_size * 8 // CLUSTER)
    image = _Image(out, 1 + l1_clusters)
    out.write(bytes(image.position))
    l2_tables: dict[int, list[int]] = {}

    def place(guest: int, entry: int) -> None:
        table = l2_tables.setdefault(guest // L2_ENTRIES, [0] * L2_ENTRIES)
        table[guest % L2_ENTRIES] = entry

    guest = 0
    pool = ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="qcow2") \
        if compress else None
    try:
        for batch in _clusters(raw, size):
            packed = list(pool.map(_deflate, batch)) if pool is not None \
                else [None] * len(batch)
            for cluster, deflated in zip(batch, packed, strict=True):
                if deflated is not None:
                    place(guest, image.compressed(deflated))
                elif cluster != _ZERO:
                    place(guest, _COPIED | image.cluster(cluster))
                guest += 1
    finally:
        if pool is not None:
            pool.shutdown()
    l1 = [0] * l1_size
    for index in sorted(l2_tables):
        l1[index] = _COPIED | image.cluster(struct.pack(f">{L2_ENTRIES}Q", *l2_tables[index]))
    _write_refcounts_and_header(image, size=size, l1=l1)


def _write_refcounts_and_header(image: _Image, *, size: int, l1: list[int]) -> None:
    out = image.out
    image.align()
    first = image.position // CLUSTER
    table_clusters, block_clusters = _refcount_layout(first)
    total = first + table_clusters + block_clusters
    refcounts = image.refcounts + [0] * (first - len(image.refcounts))
    refcounts += [1] * (table_clusters + block_clusters)
    assert len(refcounts) == total
    if max(refcounts) > 0xFFFF:
        raise OutputError("qcow2: a host cluster is shared by more than 65535 clusters")
    blocks_at = first + table_clusters
    table = [(blocks_at + index) * CLUSTER for index in range(block_clusters)]
    table += [0] * (table_clusters * REFCOUNT_BLOCKS_PER_TABLE_CLUSTER - len(table))
    out.write(struct.pack(f">{len(table)}Q", *table))
    refcounts += [0] * (block_clusters * REFCOUNTS_PER_BLOCK - len(refcounts))
    out.write(struct.pack(f">{len(refcounts)}H", *refcounts))
    header = _HEADER.pack(_MAGIC, _VERSION, 0, 0, CLUSTER_BITS, size, 0, len(l1), CLUSTER,
                          first * CLUSTER, table_clusters, 0, 0, 0, 0, 0, REFCOUNT_ORDER,
                          _HEADER.size)
    end = out.tell()
    out.seek(image.base)
    out.write(header)
    out.seek(image.base + CLUSTER)
    out.write(struct.pack(f">{len(l1)}Q", *l1))
    out.seek(end)
