"""Inflating gzip members, through the pinned zlib-ng rather than the host's zlib.

Inflated bytes are the same with any zlib (unlike deflated ones); zlib-ng's inflate is
about twice as fast as the classic zlib most hosts ship, and it is already pinned for
writing (composer/writers/compress.py), so every reader uses it.
"""

from __future__ import annotations

from typing import Protocol

from zlib_ng import zlib_ng

GZIP_WBITS = 16 + 15
"""A gzip wrapper around a deflate stream with a 32 KiB window."""

InflateError: type[Exception] = zlib_ng.error  # type: ignore[assignment]  # its stub says instance


class Inflater(Protocol):
    """What :mod:`zlib`'s decompression objects offer, and zlib-ng's."""

    unused_data: bytes
    unconsumed_tail: bytes
    eof: bool

    def decompress(self, data: bytes | bytearray | memoryview, max_length: int = 0, /) -> bytes:
        ...

    def flush(self, length: int = ..., /) -> bytes: ...


def gzip_inflater() -> Inflater:
    """A fresh decompressor for one gzip member."""
    return zlib_ng.decompressobj(GZIP_WBITS)


ZLIB_WBITS = 15
"""A zlib (RFC 1950) wrapper with a 32 KiB window: what squashfs's gzip blocks hold."""


def zlib_inflater() -> Inflater:
    """A fresh decompressor for one zlib stream."""
    return zlib_ng.decompressobj(ZLIB_WBITS)


RAW_WBITS = -15
"""A bare deflate stream with a 32 KiB window: what a qcow2 compressed cluster holds."""


def raw_inflater() -> Inflater:
    """A fresh decompressor for one raw deflate stream."""
    return zlib_ng.decompressobj(RAW_WBITS)
