"""Inflating gzip members, through the pinned zlib-ng rather than the host's zlib.

Inflated bytes are the same with any zlib (unlike deflated ones); zlib-ng's inflate is
about twice as fast as the classic zlib most hosts ship, and it is already pinned for
writing (composer/writers/compress.py), so every reader uses it.
"""

from __future__ import annotations

from typing import Any

from zlib_ng import zlib_ng

GZIP_WBITS = 16 + 15
"""A gzip wrapper around a deflate stream with a 32 KiB window."""

InflateError: type[Exception] = zlib_ng.error  # type: ignore[assignment]  # its stub says instance


def gzip_inflater() -> Any:
    """A fresh decompressor for one gzip member (``decompress``, ``unconsumed_tail``,
    ``unused_data``, ``eof`` and ``flush`` as in :mod:`zlib`)."""
    return zlib_ng.decompressobj(GZIP_WBITS)
