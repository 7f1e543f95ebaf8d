"""HashingWriter: the digest and bytes are those of plain sequential hashing, whatever the
write sizes, buffer types or threading."""

from __future__ import annotations

import gc
import hashlib
import io
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from composer.writers import stream
from composer.writers.stream import HashingWriter


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3 * stream.BATCH // 2), st.sampled_from(
    ["bytes", "bytearray", "memoryview"])), max_size=12), st.integers(0, 2**32))
def test_digest_and_output_match_sequential_hashing(
        writes: list[tuple[int, str]], seed: int) -> None:
    out = io.BytesIO()
    writer = HashingWriter(out)
    expected = hashlib.sha256()
    reused = bytearray()
    for number, (size, kind) in enumerate(writes):
        data = hashlib.shake_256(b"%d-%d" % (seed, number)).digest(size)
        expected.update(data)
        if kind == "bytes":
            writer.write(data)
        else:
            reused[:] = data
            writer.write(reused if kind == "bytearray" else memoryview(reused))
            reused[:] = bytes(len(reused))  # a caller reusing its buffer changes nothing
    assert writer.hexdigest == expected.hexdigest()
    assert writer.digest == "sha256:" + expected.hexdigest()
    assert writer.size == sum(size for size, _ in writes) == len(out.getvalue())


def test_writes_after_reading_the_digest_go_on_hashing() -> None:
    writer = HashingWriter(None)
    first = b"a" * (3 * stream.BATCH)
    writer.write(first)
    assert writer.hexdigest == hashlib.sha256(first).hexdigest()
    writer.write(b"tail")
    assert writer.hexdigest == hashlib.sha256(first + b"tail").hexdigest()


def test_abandoned_writer_stops_its_thread() -> None:
    before = {t.ident for t in threading.enumerate()}
    writer = HashingWriter(None)
    writer.write(b"x" * (2 * stream.BATCH))
    started = [t for t in threading.enumerate() if t.ident not in before]
    assert [t.name for t in started] == ["sha256"]
    del writer
    gc.collect()
    started[0].join(timeout=10)
    assert not started[0].is_alive()
