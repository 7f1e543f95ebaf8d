"""The header fields of a compressed stream (gzip, zstd, xz), read from its first bytes.

Two archives can hold the same tar and still differ in how it was compressed: a gzip
mtime, an original file name, the OS byte, a zstd checksum flag. These fields are what
a diff shows at the format level for a compressed tarball or layer.
"""

from __future__ import annotations

import struct

from composer.diff.report import Scalar

HEAD = 2048
"""Bytes of a stream read for its header (a longer gzip name is cut, and said so)."""
_FTEXT, _FHCRC, _FEXTRA, _FNAME, _FCOMMENT = 1, 2, 4, 8, 16
_XZ_CHECKS = {0: "none", 1: "crc32", 4: "crc64", 10: "sha256"}


def _zero_terminated(head: bytes, pos: int) -> tuple[str, int]:
    end = head.find(b"\0", pos)
    if end < 0:
        return head[pos:].decode("latin-1") + "…(cut)", len(head)
    return head[pos:end].decode("latin-1"), end + 1


def gzip_fields(head: bytes) -> dict[str, Scalar]:
    """RFC 1952 member header: method, flags, mtime, extra flags, OS, name, comment."""
    if len(head) < 10 or head[:2] != b"\x1f\x8b":
        return {"gzip header": "missing"}
    flags = head[3]
    fields: dict[str, Scalar] = {"method": head[2], "flags": flags,
                                 "mtime": struct.unpack_from("<I", head, 4)[0],
                                 "extra flags": head[8], "os": head[9]}
    pos = 10
    if flags & _FEXTRA and pos + 2 <= len(head):
        length = struct.unpack_from("<H", head, pos)[0]
        fields["extra"] = head[pos + 2:pos + 2 + length].hex()[:128]
        pos += 2 + length
    if flags & _FNAME and pos < len(head):
        fields["name"], pos = _zero_terminated(head, pos)
    if flags & _FCOMMENT and pos < len(head):
        fields["comment"], pos = _zero_terminated(head, pos)
    return fields


def zstd_fields(head: bytes) -> dict[str, Scalar]:
    """The first frame header's descriptor: checksum flag, single segment, sizes declared."""
    if len(head) < 5:
        return {"zstd header": "missing"}
    descriptor = head[4]
    return {"checksum flag": (descriptor >> 2) & 1, "single segment": (descriptor >> 5) & 1,
            "content size field": descriptor >> 6, "dictionary id field": descriptor & 3}


def xz_fields(head: bytes) -> dict[str, Scalar]:
    if len(head) < 8:
        return {"xz header": "missing"}
    return {"check": _XZ_CHECKS.get(head[7] & 0x0F, f"type {head[7] & 0x0F}")}


def stream_fields(kind: str, head: bytes, size: int) -> dict[str, Scalar]:
    """Compression, compressed size and the header fields of ``kind``."""
    fields: dict[str, Scalar] = {"compression": kind, "compressed size": size}
    if kind == "gzip":
        fields.update(gzip_fields(head))
    elif kind == "zstd":
        fields.update(zstd_fields(head))
    elif kind == "xz":
        fields.update(xz_fields(head))
    return fields
