"""The few ASN.1 DER encodings a PKCS#7 signature needs (X.690): tag, length, contents.

Only what :mod:`composer.writers.authenticode` builds; certificates and names come
already encoded from the ``cryptography`` package.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["context", "integer", "null", "octet_string", "oid", "raw_contents", "sequence",
           "set_of", "tlv"]


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def tlv(tag: int, contents: bytes) -> bytes:
    """One element with a single-octet ``tag`` (tag numbers below 31)."""
    return bytes([tag]) + _length(len(contents)) + contents


def raw_contents(element: bytes) -> bytes:
    """The contents octets of one DER element (without its tag and length)."""
    first = element[1]
    start = 2 if first < 0x80 else 2 + (first & 0x7F)
    return element[start:]


def sequence(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def set_of(items: Iterable[bytes]) -> bytes:
    """A SET OF: DER orders the encoded members (X.690 11.6)."""
    return tlv(0x31, b"".join(sorted(items)))


def integer(value: int) -> bytes:
    size = value.bit_length() // 8 + 1  # room for the sign bit
    return tlv(0x02, value.to_bytes(size, "big", signed=True))


def null() -> bytes:
    return b"\x05\x00"


def octet_string(data: bytes) -> bytes:
    return tlv(0x04, data)


def oid(dotted: str) -> bytes:
    arcs = [int(part) for part in dotted.split(".")]
    body = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return tlv(0x06, bytes(body))


def context(number: int, contents: bytes, *, constructed: bool = True) -> bytes:
    """A context-specific ``[number]`` element (EXPLICIT wrapping or IMPLICIT retagging:
    the caller passes what goes inside)."""
    return tlv(0x80 | (0x20 if constructed else 0) | number, contents)
