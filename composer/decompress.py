"""Streaming decompression of untrusted bytes with a bound on what comes out.

``zlib.decompress``, ``zstandard``'s ``decompressobj().decompress`` and friends return
everything one input chunk inflates to: a megabyte of a bomb becomes a gigabyte in one
call, and the MemoryError it ends in says nothing. :class:`BoundedDecoder` hands out
the output in pieces of at most :data:`PIECE` bytes (zstd, whose library has no output
bound, is fed in slices small enough that one call stays within a few MiB), stops with
the caller's error as soon as ``limit`` bytes have come out, and names a corrupt or
truncated stream.
"""

from __future__ import annotations

import lzma
from collections.abc import Iterator
from typing import Any

from composer.errors import ArchiveError, ComposerError
from composer.inflate import InflateError, gzip_inflater

PIECE = 1 << 20
ZSTD_SLICE = 1024
"""A zstd block inflates to at most 128 KiB from 4 input bytes, so 1 KiB of input yields
at most 32 MiB in one call."""
KINDS = ("none", "gzip", "zstd", "xz")


class BoundedDecoder:
    """Decode one stream of ``kind`` (``none``, ``gzip``, ``zstd``, ``xz``) fed in chunks.

    ``what`` names the stream in errors, ``limit`` bounds the decoded bytes and
    ``limit_reason`` says where the bound comes from. Concatenated gzip members and
    zstd frames are read as one stream, as ``gzip -d`` and ``zstd -d`` read them.
    """

    def __init__(self, kind: str, *, what: str, limit: int, limit_reason: str = "",
                 error: type[ComposerError] = ArchiveError) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown compression {kind!r}")
        self.kind = kind
        self.what = what
        self.limit = limit
        self.limit_reason = limit_reason
        self.error = error
        self.produced = 0
        self._decoder: Any = self._new()
        self._started = False

    def _new(self) -> Any:
        if self.kind == "gzip":
            return gzip_inflater()
        if self.kind == "xz":
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        if self.kind == "zstd":
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj()
        return None

    def _out(self, piece: bytes) -> bytes:
        self.produced += len(piece)
        if self.produced > self.limit:
            reason = f" ({self.limit_reason})" if self.limit_reason else ""
            raise self.error(f"{self.what}: {self.kind} stream inflates to more than "
                             f"{self.limit} bytes{reason}")
        return piece

    def _corrupt(self, exc: BaseException) -> ComposerError:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return self.error(f"{self.what}: not a valid {self.kind} stream ({detail})")

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded pieces of the next input chunk."""
        if not data:
            return
        self._started = True
        if self.kind == "none":
            yield self._out(data)
        elif self.kind == "zstd":
            yield from self._feed_zstd(data)
        else:
            yield from self._feed_stream(data)

    def _feed_stream(self, data: bytes) -> Iterator[bytes]:
        decoder = self._decoder
        while True:
            if decoder.eof:
                if not data:
                    return
                decoder = self._decoder = self._new()
            try:
                if self.kind == "gzip":
                    out = decoder.decompress(data, PIECE)
                    data = decoder.unused_data if decoder.eof else decoder.unconsumed_tail
                else:
                    out = decoder.decompress(data, max_length=PIECE)
                    data = decoder.unused_data if decoder.eof else b""
            except (InflateError, lzma.LZMAError, EOFError) as exc:
                raise self._corrupt(exc) from None
            if out:
                yield self._out(out)
            more = (not decoder.needs_input) if self.kind == "xz" else len(out) == PIECE
            if not decoder.eof and not data and not more:
                return

    def _feed_zstd(self, data: bytes) -> Iterator[bytes]:
        import zstandard

        view = memoryview(data)
        for start in range(0, len(view), ZSTD_SLICE):
            chunk = bytes(view[start:start + ZSTD_SLICE])
            while chunk:
                if self._decoder.eof:
                    self._decoder = self._new()
                try:
                    out = self._decoder.decompress(chunk)
                except zstandard.ZstdError as exc:
                    raise self._corrupt(exc) from None
                chunk = self._decoder.unused_data if self._decoder.eof else b""
                for begin in range(0, len(out), PIECE):
                    yield self._out(out[begin:begin + PIECE])

    def finish(self) -> Iterator[bytes]:
        """What is left once the input has ended; a stream cut short is an error."""
        if self.kind == "none":
            return
        if self.kind == "gzip" and self._started:
            try:
                rest = self._decoder.flush()
            except InflateError as exc:
                raise self._corrupt(exc) from None
            if rest:
                yield self._out(rest)
        if not self._started or not self._decoder.eof:
            raise self.error(f"{self.what}: truncated {self.kind} stream")
