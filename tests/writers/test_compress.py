"""Compressors: valid streams, fixed bytes, independent of thread count and write sizes."""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import random
import subprocess
import zlib

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from composer.errors import OutputError
from composer.writers.compress import (
    GZIP_HEADER,
    GZIP_LIBRARY,
    Compression,
    _pinned,
    libraries,
    open_compressor,
    zlib_block,
)


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


# The pinned libraries' bytes: a change here is a library upgrade, made deliberately
# (README, "Fixed compression settings"), with `make golden` for the build goldens.
GOLDEN = {
    "gzip": "75139c5f66330f4004901e91a779c278c747854c6af68dfed0d0ff064d685ab0",
    "zstd": "980f19db87a2d27f1887e03c471af906b8360165e1ddb43b90fb91a2cfa8124e",
    "xz": "b95afa7dfd658937906ffe22f0430c5348a3840aecfe4b44efafbd640a568850",
}


@pytest.mark.parametrize("kind", sorted(GOLDEN))
def test_compressor_golden(kind: str) -> None:
    assert hashlib.sha256(compress(corpus(300_000), kind)).hexdigest() == GOLDEN[kind]


def test_zlib_block_is_one_zlib_stream_with_fixed_bytes() -> None:
    data = corpus(128 * 1024, seed=3)
    block = zlib_block(data)
    assert zlib.decompress(block) == data
    assert block[:2] == b"\x78\xda"  # deflate, 32 KiB window, level 9 (FLEVEL 3)
    assert hashlib.sha256(block).hexdigest() == GOLDEN_ZLIB_BLOCK
    assert zlib.decompress(zlib_block(b"", level=1)) == b""


GOLDEN_ZLIB_BLOCK = "73ac26794a0706f674be71db061374aece95336a00394bc2726309b6a02536c6"


def test_libraries_name_the_pins_of_the_formats_used() -> None:
    assert [lib.format for lib in libraries({Compression.XZ, Compression.GZIP, Compression.NONE})] \
        == ["gzip", "xz"]
    assert libraries({Compression.NONE}) == []


def test_another_library_version_is_refused_naming_the_pin() -> None:
    _pinned(GZIP_LIBRARY, "1.1.0", "2.3.3")
    with pytest.raises(OutputError) as caught:
        _pinned(GZIP_LIBRARY, "1.1.0", "2.3.4")
    assert str(caught.value) == (
        "gzip compression: zlib-ng 1.1.0 (zlib-ng 2.3.4) is installed, but this alpine-composer "
        "pins zlib-ng==1.1.0 (zlib-ng 2.3.3), and other versions write other bytes; reinstall "
        "with pip install 'zlib-ng==1.1.0'")


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
