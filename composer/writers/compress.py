"""Compressors with fixed settings and pinned libraries: the same bytes in give the same bytes
out on every host.

No output byte comes from the host's shared libraries. Python's ``zlib`` and ``lzma`` modules
call the host's libz and liblzma, and hosts differ (Fedora 40+ and RHEL 10 ship zlib-ng in
zlib's place, which compresses differently). So every compressor here is a library compiled
into a wheel, pinned to one version in pyproject.toml, checked when it is first used, and named
in ``manifest.json`` (:func:`libraries`):

* gzip and zlib: zlib-ng (the ``zlib-ng`` package); its output was checked identical on x86_64
  (SSE2, SSE4.2, AVX2, AVX-512 code paths) and aarch64 (NEON, SVE). See README, "Fixed
  compression settings".
* zstd: libzstd as bundled in ``zstandard``'s wheels.
* xz: liblzma as bundled (statically) in ``cramjam``'s wheels.

gzip is written as pigz does it: the input is cut into fixed 128 KiB blocks, each block is
raw-deflated on its own (primed with the previous 32 KiB as a preset dictionary) and ended
with a sync flush, and the pieces are concatenated under one gzip header and trailer. Block
boundaries never depend on the number of threads, so the output is identical with one worker
or many, while every core compresses. The result is one gzip member with one deflate stream,
which every reader accepts (the kernel's initramfs unpacker needs exactly that).

For other writers (one-shot blocks, such as a squashfs writer's): :func:`zlib_block`.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any, BinaryIO

from composer.errors import OutputError
from composer.profile.model import Compression

__all__ = ["Compression", "Library", "deflate_raw", "libraries", "open_compressor", "zlib_block"]

GZIP_LEVEL = 6
GZIP_BLOCK = 128 * 1024
DICT_SIZE = 32 * 1024
ZLIB_LEVEL = 9
ZSTD_LEVEL = 9
XZ_PRESET = 6

# gzip header: magic, deflate, no flags (no name, no comment), mtime 0, XFL 0, OS 3 (Unix),
# which is exactly what `gzip -n -6` writes.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"


@dataclass(frozen=True)
class Library:
    """The compression library that shapes one format's bytes, and the wheel that ships it."""

    format: str
    name: str
    version: str
    package: str
    """The pinned distribution (``name==version``), as in pyproject.toml."""


GZIP_LIBRARY = Library("gzip", "zlib-ng", "2.3.3", "zlib-ng==1.1.0")
ZSTD_LIBRARY = Library("zstd", "zstd", "1.5.7", "zstandard==0.25.0")
XZ_LIBRARY = Library("xz", "liblzma", "5.2 (lzma-sys 0.1.20)", "cramjam==2.14.0")
LIBRARIES = {Compression.GZIP: GZIP_LIBRARY, Compression.ZSTD: ZSTD_LIBRARY,
             Compression.XZ: XZ_LIBRARY}


def libraries(kinds: set[Compression]) -> list[Library]:
    """The pinned libraries behind ``kinds`` (``none`` has none), in a fixed order."""
    return [LIBRARIES[k] for k in Compression if k in kinds and k in LIBRARIES]


def _pinned(library: Library, found_package: str, found_library: str | None = None) -> None:
    """Refuse to write with another version than the pinned one: its bytes would differ.
    ``found_library`` is None where the package does not report its library's version."""
    name, wanted = library.package.split("==", 1)
    if found_package != wanted or found_library not in (None, library.version):
        found = f"{name} {found_package}" + (f" ({library.name} {found_library})"
                                              if found_library else "")
        raise OutputError(
            f"{library.format} compression: {found} is installed, but this alpine-composer pins "
            f"{library.package} ({library.name} {library.version}), and other versions write "
            f"other bytes; reinstall with pip install '{library.package}'")


def _zlib_ng() -> ModuleType:
    from zlib_ng import __version__ as package_version
    from zlib_ng import zlib_ng

    # The stubs call both versions int; they are strings.
    _pinned(GZIP_LIBRARY, str(package_version), str(zlib_ng.ZLIBNG_RUNTIME_VERSION))
    return zlib_ng


def zlib_block(data: bytes | bytearray | memoryview, *, level: int = ZLIB_LEVEL) -> bytes:
    """``data`` as one complete zlib stream (RFC 1950: header, deflate, Adler-32), from the
    pinned zlib-ng: what squashfs and similar formats store per compressed block.

    Thread-safe, and it releases the GIL while compressing, so callers may compress blocks
    in parallel. The default level 9 is what ``mksquashfs -comp gzip`` uses.
    """
    zng = _zlib_ng()
    result: bytes = zng.compress(data, level)
    return result


def deflate_raw(data: bytes | bytearray | memoryview, *, level: int, window_bits: int = 15,
                mem_level: int = 8) -> bytes:
    """``data`` as one finished raw deflate stream (RFC 1951, no header or check) from the
    pinned zlib-ng, whose matches reach back at most ``2**window_bits`` bytes: formats whose
    readers inflate with a small window (qcow2's compressed clusters: 12) need it that small.
    Thread-safe and GIL-free like :func:`zlib_block`."""
    zng = _zlib_ng()
    comp = zng.compressobj(level, zng.DEFLATED, -window_bits, mem_level, zng.Z_DEFAULT_STRATEGY)
    result: bytes = comp.compress(data) + comp.flush(zng.Z_FINISH)
    return result


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


def _deflate_block(zng: Any, block: bytes, dictionary: bytes, level: int) -> tuple[bytes, int]:
    """One block's raw deflate data (sync-flushed, so the next block starts on a byte) and its
    CRC-32; both release the GIL, so blocks compress on every core."""
    if dictionary:
        comp = zng.compressobj(level, zng.DEFLATED, -15, 8, zng.Z_DEFAULT_STRATEGY, dictionary)
    else:
        comp = zng.compressobj(level, zng.DEFLATED, -15, 8, zng.Z_DEFAULT_STRATEGY)
    return comp.compress(block) + comp.flush(zng.Z_SYNC_FLUSH), zng.crc32(block)


class ParallelGzipWriter(CompressedWriter):
    """Deterministic block-parallel gzip (see the module docstring)."""

    def __init__(self, out: BinaryIO, *, level: int = GZIP_LEVEL, block_size: int = GZIP_BLOCK,
                 workers: int | None = None) -> None:
        self._zng = _zlib_ng()
        self._out = out
        self._level = level
        self._block_size = block_size
        # The CPUs this process may run on (taskset, cgroups), not the machine's count.
        self._workers = workers if workers is not None else max(1, min(4, len(os.sched_getaffinity(0))))
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[tuple[Future[tuple[bytes, int]], int]] = deque()
        self._buffer = bytearray()
        self._previous_tail = b""
        self._crc = 0
        self._size = 0
        self._closed = False
        out.write(GZIP_HEADER)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        self._size += size
        if not self._buffer and size == self._block_size:
            self._submit(bytes(data))
            return size
        self._buffer += data
        while len(self._buffer) >= self._block_size:
            block = bytes(self._buffer[: self._block_size])
            del self._buffer[: self._block_size]
            self._submit(block)
        return size

    def _emit(self, piece: tuple[bytes, int], length: int) -> None:
        deflated, crc = piece
        self._out.write(deflated)
        self._crc = self._zng.crc32_combine(self._crc, crc, length)

    def _submit(self, block: bytes) -> None:
        dictionary = self._previous_tail
        self._previous_tail = block[-DICT_SIZE:]
        if self._workers <= 1:
            self._emit(_deflate_block(self._zng, block, dictionary, self._level), len(block))
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._workers,
                                            thread_name_prefix="gzip")
        self._pending.append((self._pool.submit(_deflate_block, self._zng, block, dictionary,
                                                self._level), len(block)))
        while len(self._pending) > 2 * self._workers:
            self._drain_one()

    def _drain_one(self) -> None:
        future, length = self._pending.popleft()
        self._emit(future.result(), length)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._buffer:
            self._submit(bytes(self._buffer))
            self._buffer.clear()
        while self._pending:
            self._drain_one()
        if self._pool is not None:
            self._pool.shutdown()
        # An empty final block ends the deflate stream (BFINAL set, fixed Huffman, no data).
        zng = self._zng
        self._out.write(zng.compressobj(self._level, zng.DEFLATED, -15).flush(zng.Z_FINISH))
        self._out.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))

    def abort(self) -> None:
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


class ZstdWriter(CompressedWriter):
    """zstd at a fixed level, single-threaded, checksum on, content size off (streaming)."""

    def __init__(self, out: BinaryIO, *, level: int = ZSTD_LEVEL) -> None:
        import zstandard

        _pinned(ZSTD_LIBRARY, zstandard.__version__,
                ".".join(str(part) for part in zstandard.ZSTD_VERSION))
        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads=0, write_checksum=1, write_content_size=0, write_dict_id=0)
        self._writer = zstandard.ZstdCompressor(compression_params=params).stream_writer(
            out, closefd=False, write_return_read=True)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return int(self._writer.write(data))

    def close(self) -> None:
        self._writer.close()  # type: ignore[no-untyped-call]


class XzWriter(CompressedWriter):
    """xz at preset 6 with a CRC64 check, like ``xz -6``, from cramjam's bundled liblzma.

    cramjam's ``flush()`` ends an LZMA2 chunk, which would make the bytes depend on how the
    input was written; so the compressed stream stays inside the compressor until ``close()``
    (about a third of the input for a root filesystem).
    """

    def __init__(self, out: BinaryIO, *, preset: int = XZ_PRESET) -> None:
        import cramjam

        _pinned(XZ_LIBRARY, cramjam.__version__)
        self._out = out
        self._comp = cramjam.xz.Compressor(preset)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return int(self._comp.compress(data))

    def close(self) -> None:
        self._out.write(memoryview(self._comp.finish()))


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
