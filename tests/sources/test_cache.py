from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import pytest

from composer.errors import VerificationError
from composer.sources.cache import ContentCache, default_cache_dir, usable_validator


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_default_cache_dir_prefers_xdg() -> None:
    env = {"XDG_CACHE_HOME": "/var/cache/me", "HOME": "/home/me"}
    assert default_cache_dir(env) == Path("/var/cache/me/alpine-composer")


def test_default_cache_dir_falls_back_to_home() -> None:
    assert default_cache_dir({"HOME": "/home/me"}) == Path("/home/me/.cache/alpine-composer")
    # A relative XDG_CACHE_HOME is invalid per the XDG spec and is ignored.
    env = {"XDG_CACHE_HOME": "rel", "HOME": "/home/me"}
    assert default_cache_dir(env) == Path("/home/me/.cache/alpine-composer")


def test_put_bytes_is_content_addressed(cache: ContentCache) -> None:
    path = cache.put_bytes(b"hello")
    assert path == cache.root / "blobs" / "sha256" / sha(b"hello")
    assert path.read_bytes() == b"hello"
    assert cache.put_bytes(b"hello", sha256=sha(b"hello")) == path
    assert cache.path_for(sha(b"hello")) == path
    assert cache.path_for(sha(b"other")) is None
    assert cache.path_for("not-a-digest") is None


def test_put_bytes_rejects_wrong_digest_and_leaves_nothing(cache: ContentCache) -> None:
    wrong = "0" * 64
    with pytest.raises(VerificationError) as err:
        cache.put_bytes(b"hello", sha256=wrong)
    assert str(err.value) == f"cache: sha256 mismatch: expected {wrong}, got {sha(b'hello')}"
    assert cache.path_for(sha(b"hello")) is None
    assert not cache.tmp_dir.exists() or list(cache.tmp_dir.iterdir()) == []


def test_temp_file_is_removed_when_the_block_fails(cache: ContentCache) -> None:
    seen: list[Path] = []
    with pytest.raises(RuntimeError):
        with cache.temp_file() as tmp:
            seen.append(tmp)
            tmp.write_bytes(b"partial download")
            assert tmp.parent == cache.tmp_dir
            raise RuntimeError("network went away")
    assert not seen[0].exists()
    assert list(cache.tmp_dir.iterdir()) == []
    assert list(cache.blobs_dir.iterdir()) == []


def test_put_file_moves_verified_file_into_place(cache: ContentCache) -> None:
    with cache.temp_file() as tmp:
        tmp.write_bytes(b"abc")
        path = cache.put_file(tmp, sha(b"abc"))
        assert not tmp.exists()
    assert path.read_bytes() == b"abc"
    assert list(cache.tmp_dir.iterdir()) == []


def test_put_file_refuses_mismatch(cache: ContentCache) -> None:
    with pytest.raises(VerificationError, match="sha256 mismatch"):
        with cache.temp_file() as tmp:
            tmp.write_bytes(b"abc")
            cache.put_file(tmp, sha(b"abd"))
    assert list(cache.blobs_dir.iterdir()) == []
    assert list(cache.tmp_dir.iterdir()) == []


def test_url_records_round_trip(cache: ContentCache) -> None:
    url = "https://example.org/alpine/v3.20/releases/x86_64/latest-releases.yaml"
    assert cache.lookup_url(url) is None
    written = cache.remember_url(url, "A" * 64, 12, etag='"x"', last_modified="Mon", fetched_at=5.0)
    record = cache.lookup_url(url)
    assert record == written
    assert record is not None and record.sha256 == "a" * 64 and record.fetched_at == 5.0
    record_files = list(cache.urls_dir.iterdir())
    assert [p.name for p in record_files] == [sha(url.encode()) + ".json"]
    assert json.loads(record_files[0].read_bytes())["url"] == url


def test_corrupt_url_record_reads_as_missing(cache: ContentCache) -> None:
    url = "http://example.org/x"
    cache.remember_url(url, "b" * 64, 1, fetched_at=1.0)
    (cache.urls_dir / (sha(url.encode()) + ".json")).write_bytes(b"{trunc")
    assert cache.lookup_url(url) is None


@pytest.mark.parametrize("record", [
    b"",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"url": "U", "sha256": "' + b"b" * 64 + b'", "size": 1e999, "fetched_at": 1}',
    b'{"url": "U", "sha256": "' + b"b" * 64 + b'", "size": ' + b"9" * 5000 + b', "fetched_at": 1}',
    b'{"url": ["U"], "sha256": "' + b"b" * 64 + b'", "size": 1, "fetched_at": 1}',
    b'{"url": "U", "sha256": "../../x", "size": 1, "fetched_at": 1}',
    b'{"url": "U", "sha256": "' + b"b" * 64 + b'", "size": -1, "fetched_at": 1}',
    b'{"url": "U", "sha256": "' + b"b" * 64 + b'", "size": 1, "fetched_at": "now"}',
    b'{"url": "U", "sha256": "' + b"b" * 64 + b'", "size": 1, "fetched_at": 1}' + b" " * 70_000,
], ids=["empty (a crash before the write reached the disk)", "deep", "infinite", "long-number", "list", "path", "negative", "text-time", "huge"])
def test_hostile_url_records_read_as_missing(cache: ContentCache, record: bytes) -> None:
    url = "http://example.org/x"
    cache.remember_url(url, "b" * 64, 1, fetched_at=1.0)
    path = cache.urls_dir / (sha(url.encode()) + ".json")
    path.write_bytes(record.replace(b'"U"', b'"' + url.encode() + b'"'))
    assert cache.lookup_url(url) is None


def test_a_record_that_is_a_fifo_reads_as_missing(cache: ContentCache) -> None:
    url = "http://example.org/x"
    cache.remember_url(url, "b" * 64, 1, fetched_at=1.0)
    path = cache.urls_dir / (sha(url.encode()) + ".json")
    path.unlink()
    os.mkfifo(path)
    assert cache.lookup_url(url) is None


def test_validators_that_cannot_be_sent_back_are_dropped(cache: ContentCache) -> None:
    url = "http://example.org/x"
    cache.remember_url(url, "b" * 64, 1, etag="a\r\nX: 1", last_modified="x" * 2000, fetched_at=1.0)
    record = cache.lookup_url(url)
    assert record is not None and record.etag is None and record.last_modified is None
    assert usable_validator('"5f3a-61c"') == '"5f3a-61c"'


def _writer(root: str, worker: int, rounds: int) -> None:
    cache = ContentCache(Path(root))
    for i in range(rounds):
        shared = f"shared blob {i}".encode() * 1000
        own = f"worker {worker} blob {i}".encode() * 1000
        cache.put_bytes(shared, sha256=sha(shared))
        cache.put_bytes(own)
        cache.remember_url("http://example.org/shared", sha(shared), len(shared), fetched_at=i)


def test_concurrent_writers_do_not_corrupt_the_cache(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    rounds = 40
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_writer, args=(str(root), n, rounds)) for n in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    cache = ContentCache(root)
    blobs = sorted(cache.blobs_dir.iterdir())
    assert len(blobs) == rounds * 3  # shared + one per worker, per round
    for blob in blobs:
        assert sha(blob.read_bytes()) == blob.name
    assert list(cache.tmp_dir.iterdir()) == []
    record = cache.lookup_url("http://example.org/shared")
    assert record is not None and cache.path_for(record.sha256) is not None
