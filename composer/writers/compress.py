"""Compressors with fixed settings, so the same bytes in give the same bytes out anywhere.

gzip is written as pigz does it: the input is cut into fixed 128 KiB blocks, each
block is raw-deflated on its own (primed with the previous 32 KiB as a preset
dictionary) and ended with a sync flush, and the pieces are concatenated under one
gzip header and trailer. Block boundaries never depend on the number of threads,
so the output is identical with one worker or many, while both cores compress.
"""

from __future__ import annotations

import lzma
import os
import struct
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import BinaryIO, Protocol

from composer.profile.model import Compression

__all__ = ["Compression", "open_compressor"]

GZIP_LEVEL = 6
GZIP_BLOCK = 128 * 1024
DICT_SIZE = 32 * 1024
ZSTD_LEVEL = 9
XZ_PRESET = 6

# gzip header: magic, deflate, no flags (no name, no comment), mtime 0, XFL 0, OS 3 (Unix),
# which is exactly what `gzip -n -6` writes.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"


class Sink(Protocol):
    def write(self, data: bytes) -> int: ...


class CompressedWriter:
    """A writable stream that compresses into ``out``; ``close()`` finishes the stream."""

    def write(self, data: bytes | bytearray | memoryview) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Nothing to do: only close() may end blocks, to keep output independent of flushes."""

    def __enter__(self) -> CompressedWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def abort(self) -> None:
        """Stop without finishing the stream (the caller discards the output)."""


def _deflate_block(block: bytes, dictionary: bytes, level: int) -> bytes:
    if dictionary:
        comp = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, dictionary)
    else:
        comp = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY)
    return comp.compress(block) + comp.flush(zlib.Z_SYNC_FLUSH)


class ParallelGzipWriter(CompressedWriter):
    """Deterministic block-parallel gzip (see the module docstring)."""

    def __init__(self, out: BinaryIO, *, level: int = GZIP_LEVEL, block_size: int = GZIP_BLOCK,
                 workers: int | None = None) -> None:
        self._out = out
        self._level = level
        self._block_size = block_size
        # The CPUs this process may run on (taskset, cgroups), not the machine's count.
        self._workers = workers if workers is not None else max(1, min(4, len(os.sched_getaffinity(0))))
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future[bytes]] = deque()
        self._buffer = bytearray()
        self._previous_tail = b""
        self._crc = 0
        self._size = 0
        self._closed = False
        out.write(GZIP_HEADER)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._buffer += data
        while len(self._buffer) >= self._block_size:
            block = bytes(self._buffer[: self._block_size])
            del self._buffer[: self._block_size]
            self._submit(block)
        return len(data)

    def _submit(self, block: bytes) -> None:
        dictionary = self._previous_tail
        self._previous_tail = block[-DICT_SIZE:]
        if self._workers <= 1:
            self._out.write(_deflate_block(block, dictionary, self._level))
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._workers,
                                            thread_name_prefix="gzip")
        self._pending.append(self._pool.submit(_deflate_block, block, dictionary, self._level))
        while len(self._pending) > 2 * self._workers:
            self._out.write(self._pending.popleft().result())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._buffer:
            self._submit(bytes(self._buffer))
            self._buffer.clear()
        while self._pending:
            self._out.write(self._pending.popleft().result())
        if self._pool is not None:
            self._pool.shutdown()
        # An empty final block ends the deflate stream (BFINAL set, fixed Huffman, no data).
        self._out.write(zlib.compressobj(self._level, zlib.DEFLATED, -15).flush(zlib.Z_FINISH))
        self._out.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))

    def abort(self) -> None:
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


class ZstdWriter(CompressedWriter):
    """zstd at a fixed level, single-threaded, checksum on, content size off (streaming)."""

    def __init__(self, out: BinaryIO, *, level: int = ZSTD_LEVEL) -> None:
        import zstandard

        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads=0, write_checksum=1, write_content_size=0, write_dict_id=0)
        self._writer = zstandard.ZstdCompressor(compression_params=params).stream_writer(
            out, closefd=False, write_return_read=True)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return int(self._writer.write(data))

    def close(self) -> None:
        self._writer.close()  # type: ignore[no-untyped-call]


class XzWriter(CompressedWriter):
    """xz at preset 6 with a CRC64 check, like `xz -6`."""

    def __init__(self, out: BinaryIO, *, preset: int = XZ_PRESET) -> None:
        self._out = out
        self._comp = lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                                         preset=preset)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._out.write(self._comp.compress(data))
        return len(data)

    def close(self) -> None:
        self._out.write(self._comp.flush())


class PlainWriter(CompressedWriter):
    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._out.write(data)
        return len(data)

    def close(self) -> None:
        pass


def open_compressor(out: BinaryIO, compression: Compression | str,
                    *, workers: int | None = None) -> CompressedWriter:
    """A writer that compresses into ``out`` with the fixed settings for ``compression``."""
    kind = Compression(compression)
    if kind == Compression.GZIP:
        return ParallelGzipWriter(out, workers=workers)
    if kind == Compression.ZSTD:
        return ZstdWriter(out)
    if kind == Compression.XZ:
        return XzWriter(out)
    return PlainWriter(out)
