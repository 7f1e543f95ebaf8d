"""Compressors: valid streams, fixed bytes, independent of thread count and write sizes."""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import random
import subprocess

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from composer.writers.compress import GZIP_HEADER, open_compressor


def compress(data: bytes, kind: str, *, workers: int | None = None, step: int = 65536) -> bytes:
    out = io.BytesIO()
    with open_compressor(out, kind, workers=workers) as comp:
        for i in range(0, len(data), step):
            comp.write(data[i:i + step])
    return out.getvalue()


def corpus(size: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghij") for _ in range(rng.randint(1, 9))) for _ in range(500)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" "
        if rng.random() < 0.01:
            out += rng.randbytes(64)
    return bytes(out[:size])


def test_gzip_is_identical_for_any_worker_count_and_write_size() -> None:
    data = corpus(1_000_000)
    outputs = {compress(data, "gzip", workers=w, step=s)
               for w in (1, 2, 3) for s in (1000, 65536, 10**7)}
    assert len(outputs) == 1
    (out,) = outputs
    assert out.startswith(GZIP_HEADER)
    assert gzip.decompress(out) == data
    assert subprocess.run(["gzip", "-dc"], input=out, capture_output=True, check=True).stdout == data


def test_gzip_golden() -> None:
    assert hashlib.sha256(compress(corpus(300_000), "gzip")).hexdigest() == GOLDEN_GZIP


GOLDEN_GZIP = "af707a33bf59041b516d4076347108f89dba5d5647ceb0e595ed26cf829b2eee"


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300_000), st.integers(1, 4))
def test_gzip_round_trip_property(data: bytes, workers: int) -> None:
    out = compress(data, "gzip", workers=workers, step=7919)
    assert gzip.decompress(out) == data
    assert out == compress(data, "gzip", workers=1)


@pytest.mark.parametrize("kind", ["zstd", "xz", "none"])
def test_other_compressions_round_trip_and_are_stable(kind: str) -> None:
    data = corpus(400_000, seed=7)
    first = compress(data, kind, step=1000)
    assert first == compress(data, kind, step=100_000)
    if kind == "zstd":
        back = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(first)).read()
    elif kind == "xz":
        back = lzma.decompress(first)
    else:
        back = first
    assert back == data


def test_empty_input_is_a_valid_gzip() -> None:
    assert gzip.decompress(compress(b"", "gzip")) == b""
