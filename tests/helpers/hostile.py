"""Hand-made hostile inputs: tar headers tarfile would never write, bombs, broken OpenPGP.

Each builder returns the bytes of one attack from issue 11's list, small enough
to keep in a test; the tests feed them to the public parsers and to the CLI.
"""

from __future__ import annotations

import base64
import gzip
import io
import zlib

BLOCK = 512


def header(name: str, kind: bytes = b"0", size: int = 0, *, mode: int = 0o644,
           gnu: bool = False, size_field: bytes | None = None) -> bytes:
    """One tar header block with a correct checksum; ``size_field`` overrides the raw field."""
    block = bytearray(BLOCK)
    raw_name = name.encode()
    block[0:len(raw_name)] = raw_name
    block[100:108] = b"%07o\0" % mode
    block[108:116] = b"0000000\0"
    block[116:124] = b"0000000\0"
    block[124:136] = size_field if size_field is not None else b"%011o\0" % size
    block[136:148] = b"00000000000\0"
    block[156:157] = kind
    block[257:265] = b"ustar  \0" if gnu else b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def pax_record(key: str, value: str) -> bytes:
    """``<len> key=value\\n`` with the length counting itself."""
    body = f" {key}={value}\n".encode()
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


def pax_member(records: bytes, name: str = "file", content: bytes = b"x",
               kind: bytes = b"0") -> bytes:
    """A pax ``x`` header with ``records`` before a member ``name``."""
    return (header("PaxHeaders/" + name, b"x", len(records)) + padded(records)
            + header(name, kind, len(content)) + padded(content))


def end() -> bytes:
    return bytes(2 * BLOCK)


SPARSE_MEMBER = header("GNUSparseFile.0/big", b"S", 0, gnu=True) + end()
"""A GNU sparse member (type ``S``): tarfile would expand it to what its map declares."""

PAX_SPARSE = pax_member(pax_record("GNU.sparse.realsize", "1099511627776")
                        + pax_record("GNU.sparse.map", "0,0")) + end()
"""A pax-declared 1 TiB sparse file in a few hundred bytes."""

PAX_DIGIT_RUN = header("PaxHeaders/x", b"x", 60_000) + padded(b"1" * 60_000) \
    + header("x", b"0", 0) + end()
"""A pax body that is one long run of digits (the CVE-2024-6232 backtracking shape)."""

PAX_HUGE_SIZE = pax_member(pax_record("size", "99999999999")) + end()
PAX_INF_MTIME = pax_member(pax_record("mtime", "inf")) + end()
PAX_SIZE_OVERFLOW = pax_member(pax_record("size", "9" * 40)) + end()
BASE256_HUGE_SIZE = header("big", b"0", size_field=b"\x80" + b"\xff" * 11) + end()
TRUNCATED_GZIP = b"\x1f\x8b\x08"


def gzip_bomb(inflated: int, name: str = "zeros") -> bytes:
    """A .tar.gz whose one regular member is ``inflated`` zero bytes (about 1000:1)."""
    out = io.BytesIO()
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out.write(comp.compress(header(name, b"0", inflated)))
    chunk = bytes(1 << 20)
    left = inflated
    while left > 0:
        out.write(comp.compress(chunk[:min(left, len(chunk))]))
        left -= len(chunk)
    out.write(comp.compress(bytes(-inflated % BLOCK) + end()))
    out.write(comp.flush())
    return out.getvalue()


def deflate_zeros(size: int) -> bytes:
    """A gzip member of ``size`` zero bytes."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = []
    left = size
    chunk = bytes(1 << 20)
    while left > 0:
        parts.append(comp.compress(chunk[:min(left, len(chunk))]))
        left -= len(chunk)
    parts.append(comp.flush())
    return b"".join(parts)


def tar_of(files: list[tuple[str, bytes]], *, pax: bool = False) -> bytes:
    """A well-formed tar (GNU format, or pax) of regular files, written by ``tarfile``."""
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w",
                      format=tarfile.PAX_FORMAT if pax else tarfile.GNU_FORMAT) as archive:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzip_member(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


# --- OpenPGP --------------------------------------------------------------------------


def dearmor(text: bytes) -> bytes:
    """The binary packets of an ASCII-armored OpenPGP block."""
    lines = text.decode().splitlines()
    body = lines[lines.index("") + 1:]
    return base64.b64decode("".join(line for line in body
                                    if line and not line.startswith(("=", "-----"))))


def packets(data: bytes) -> list[tuple[int, int, int, int]]:
    """(tag, offset, header length, body length) of each OpenPGP packet."""
    pos = 0
    found = []
    while pos < len(data):
        first = data[pos]
        if first & 0x40:
            tag, octet = first & 0x3F, data[pos + 1]
            if octet < 192:
                head, length = 2, octet
            elif octet < 224:
                head, length = 3, ((octet - 192) << 8) + data[pos + 2] + 192
            else:
                head, length = 6, int.from_bytes(data[pos + 2:pos + 6], "big")
        else:
            tag = (first >> 2) & 0x0F
            head = {0: 2, 1: 3, 2: 5}[first & 3]
            length = int.from_bytes(data[pos + 1:pos + head], "big")
        found.append((tag, pos, head, length))
        pos += head + length
    return found


def unknown_hash_signature(armored_signature: bytes) -> bytes:
    """A v4 signature whose hash algorithm id is 99, which no implementation knows."""
    sig = bytearray(dearmor(armored_signature))
    _tag, pos, head, _length = packets(bytes(sig))[0]
    sig[pos + head + 3] = 99
    return bytes(sig)


def broken_binding_key(armored_key: bytes) -> bytes:
    """The key with its self-signature damaged: the fingerprint still matches the pin."""
    key = bytearray(dearmor(armored_key))
    for tag, pos, head, length in packets(bytes(key)):
        if tag == 2:
            key[pos + head + length - 5] ^= 0xFF
            return bytes(key)
    raise ValueError("no signature packet in the key")
