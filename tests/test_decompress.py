"""Bounded streaming decompression: pieces of at most 1 MiB, the bound named, faults named."""

from __future__ import annotations

import gzip
import lzma
import os
import tracemalloc
from collections.abc import Callable

import pytest
import zstandard

from composer.decompress import PIECE, BoundedDecoder
from composer.errors import ArchiveError, VerificationError

PAYLOAD = os.urandom(300_000) + bytes(3_000_000)
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda data: gzip.compress(data, mtime=0),
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
    "xz": lzma.compress,
}


def decode(kind: str, data: bytes, *, limit: int = 1 << 40, step: int = 1 << 20) -> bytes:
    decoder = BoundedDecoder(kind, what="s", limit=limit)
    out = []
    for start in range(0, len(data), step):
        out += decoder.feed(data[start:start + step])
    out += decoder.finish()
    assert max(map(len, out), default=0) <= PIECE
    return b"".join(out)


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
@pytest.mark.parametrize("step", [1, 4096, 1 << 20])
def test_round_trip_in_any_chunking(kind: str, step: int) -> None:
    payload = PAYLOAD if step > 1 else PAYLOAD[:3000]
    assert decode(kind, COMPRESSORS[kind](payload), step=step) == payload


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_concatenated_members_are_one_stream(kind: str) -> None:
    data = COMPRESSORS[kind](b"one ") + COMPRESSORS[kind](b"two")
    assert decode(kind, data) == b"one two"


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_truncated_and_corrupt_streams_are_named(kind: str) -> None:
    data = COMPRESSORS[kind](PAYLOAD)
    with pytest.raises(ArchiveError, match=rf"^s: truncated {kind} stream$"):
        decode(kind, data[:-7])
    with pytest.raises(ArchiveError, match=rf"^s: truncated {kind} stream$"):
        decode(kind, b"")
    with pytest.raises(ArchiveError, match=rf"^s: not a valid {kind} stream \(.+\)$"):
        decode(kind, b"\x00not compressed at all" * 10)


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_a_bomb_stops_at_the_bound_in_bounded_memory(kind: str) -> None:
    bomb = COMPRESSORS[kind](bytes(256 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(VerificationError) as err:
            decoder = BoundedDecoder(kind, what="layer x", limit=8 << 20, error=VerificationError,
                                     limit_reason="64 MiB plus 100 times its stored bytes")
            for start in range(0, len(bomb), 1 << 20):
                for _piece in decoder.feed(bomb[start:start + (1 << 20)]):
                    pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(err.value) == (f"layer x: {kind} stream inflates to more than 8388608 bytes "
                              "(64 MiB plus 100 times its stored bytes)")
    assert peak < 48 << 20, f"peak {peak} bytes"


def test_none_counts_too() -> None:
    with pytest.raises(ArchiveError, match="^s: none stream inflates to more than 3 bytes$"):
        decode("none", b"abcd", limit=3)
    assert decode("none", b"abc", limit=3) == b"abc"
