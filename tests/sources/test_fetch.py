from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from composer.errors import FetchError, NotFoundError, OfflineError, VerificationError
from composer.sources.cache import ContentCache
from composer.sources.fetch import FetchedInput, Fetcher
from tests.helpers.httpserver import Server

NAME = "v3.20/releases/x86_64/blob.bin"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def blob_url(served: Server, payload: bytes) -> str:
    path = served.root / NAME
    path.parent.mkdir(parents=True)
    path.write_bytes(payload)
    return served.url_for(NAME)


def no_leftovers(cache: ContentCache) -> None:
    assert list(cache.tmp_dir.iterdir()) == []


def test_http_and_file_urls_give_the_same_blob(
    make_fetcher: Callable[..., Fetcher], served: Server, blob_url: str, payload: bytes,
    tmp_path: Path,
) -> None:
    fetcher = make_fetcher()
    via_http = fetcher.fetch_blob(blob_url, sha256=sha(payload), size=len(payload), what="blob")
    file_url = (served.root / NAME).as_uri()
    other = Fetcher(fetcher.settings, ContentCache(tmp_path / "other-cache"))
    via_file = other.fetch_blob(file_url, sha256=sha(payload), size=len(payload), what="blob")
    assert via_http.read_bytes() == via_file.read_bytes() == payload
    assert via_http.name == via_file.name == sha(payload)
    assert fetcher.inputs == [FetchedInput(blob_url, sha(payload), len(payload))]
    assert other.inputs == [FetchedInput(file_url, sha(payload), len(payload))]


def test_cached_digest_needs_no_network(
    make_fetcher: Callable[..., Fetcher], served: Server, blob_url: str, payload: bytes
) -> None:
    fetcher = make_fetcher()
    first = fetcher.fetch_blob(blob_url, sha256=sha(payload), size=None, what="blob")
    second = fetcher.fetch_blob(blob_url, sha256=sha(payload), size=None, what="blob")
    assert first == second
    assert served.count(NAME) == 1
    assert len(fetcher.inputs) == 1


def test_unknown_digest_is_stored_under_computed_hash(
    make_fetcher: Callable[..., Fetcher], blob_url: str, payload: bytes, cache: ContentCache
) -> None:
    path = make_fetcher().fetch_blob(blob_url, sha256=None, size=None, what="blob")
    assert path == cache.path_for(sha(payload))
    record = cache.lookup_url(blob_url)
    assert record is not None and record.sha256 == sha(payload) and record.size == len(payload)


def test_server_errors_are_retried(
    make_fetcher: Callable[..., Fetcher], served: Server, blob_url: str, payload: bytes
) -> None:
    served.faults.fail(NAME, times=2)
    path = make_fetcher().fetch_blob(blob_url, sha256=sha(payload), size=len(payload), what="blob")
    assert path.read_bytes() == payload
    assert served.count(NAME) == 3


def test_persistent_server_error_fails_after_bounded_attempts(
    make_fetcher: Callable[..., Fetcher], served: Server, blob_url: str, payload: bytes,
    cache: ContentCache,
) -> None:
    served.faults.fail(NAME, times=100, status=503)
    with pytest.raises(FetchError) as err:
        make_fetcher(retries=4).fetch_blob(blob_url, sha256=sha(payload), size=None, what="blob")
    assert str(err.value) == f"blob: {blob_url}: HTTP 503 after 5 attempts"
    assert served.count(NAME) == 5
    assert cache.path_for(sha(payload)) is None
    no_leftovers(cache)


def test_reset_mid_body_resumes_with_range(
    make_fetcher: Callable[..., Fetcher], served: Server, blob_url: str, payload: bytes
) -> None:
    cut = 2 * 65536  # whole read chunks: a partial chunk is dropped by urllib3 on reset
    served.faults.reset(NAME, times=1, after=cut)
    path = make_fetcher().fetch_blob(blob_url, sha256=sha(payload), size=len(payload), what="blob")
    assert path.read_bytes() == payload
    first, second = served.requests_for(NAME)
    assert "Range" not in first.headers
    assert second.headers["Range"] == f"bytes={cut}-"


def test_persistent_resets_fail_with_cause(
    make_fetcher: Callable[..., Fetcher], served: Server, blob_url: str, payload: bytes,
    cache: ContentCache,
) -> None:
    served.faults.reset(NAME, times=100, after=0)
    with pytest.raises(FetchError) as err:
        make_fetcher().fetch_blob(blob_url, sha256=sha(payload), size=len(payload), what="blob")
    assert str(err.value) == f"blob: {blob_url}: connection reset after 5 attempts"
    assert served.count(NAME) == 5
    no_leftovers(cache)


def test_truncated_body_is_resumed(
    make_fetcher: Callable[..., Fetcher], served: Server, blob_url: str, payload: bytes
) -> None:
    served.faults.truncate(NAME, times=1, to=1000)
    path = make_fetcher().fetch_blob(blob_url, sha256=sha(payload), size=len(payload), what="blob")
    assert path.read_bytes() == payload
    assert served.requests_for(NAME)[1].headers["Range"] == "bytes=1000-"


def test_persistently_truncated_body_reports_bytes(
    make_fetcher: Callable[..., Fetcher], served: Server, blob_url: str, payload: bytes,
    cache: ContentCache,
) -> None:
    served.faults.truncate(NAME, times=100, to=1000)
    with pytest.raises(FetchError) as err:
        make_fetcher().fetch_blob(blob_url, sha256=sha(payload), size=len(payload), what="blob")
    assert str(err.value) == f"blob: {blob_url}: got 5000 of {len(payload)} bytes after 5 attempts"
    assert cache.path_for(sha(payload)) is None
    no_leftovers(cache)


def test_short_file_with_known_size_is_a_fetch_error(
    make_fetcher: Callable[..., Fetcher], served: Server, payload: bytes, cache: ContentCache
) -> None:
    (served.root / "short.bin").write_bytes(payload[:10])
    url = served.url_for("short.bin")
    with pytest.raises(FetchError) as err:
        make_fetcher(retries=0).fetch_blob(url, sha256=sha(payload), size=len(payload), what="blob")
    assert str(err.value) == f"blob: {url}: got 10 of {len(payload)} bytes after 1 attempt"
    no_leftovers(cache)


def test_longer_file_than_expected_is_rejected(
    make_fetcher: Callable[..., Fetcher], blob_url: str, payload: bytes, cache: ContentCache
) -> None:
    with pytest.raises(FetchError) as err:
        make_fetcher().fetch_blob(blob_url, sha256=None, size=len(payload) - 1, what="blob")
    assert str(err.value) == f"blob: {blob_url}: more than the expected {len(payload) - 1} bytes"
    assert list(cache.blobs_dir.iterdir()) == []
    no_leftovers(cache)


def test_not_found_fails_at_once(
    make_fetcher: Callable[..., Fetcher], served: Server, cache: ContentCache
) -> None:
    url = served.url_for("missing.tar.gz")
    with pytest.raises(NotFoundError) as err:
        make_fetcher().fetch_blob(url, sha256=None, size=None, what="minirootfs")
    assert str(err.value) == f"minirootfs: {url}: HTTP 404 Not Found"
    assert served.count("missing.tar.gz") == 1
    no_leftovers(cache)


def test_client_error_is_not_retried(
    make_fetcher: Callable[..., Fetcher], served: Server, blob_url: str
) -> None:
    served.faults.fail(NAME, times=100, status=403)
    with pytest.raises(FetchError) as err:
        make_fetcher().fetch_blob(blob_url, sha256=None, size=None, what="blob")
    assert str(err.value) == f"blob: {blob_url}: HTTP 403 Forbidden"
    assert not isinstance(err.value, NotFoundError)
    assert served.count(NAME) == 1


def test_sha256_mismatch_stores_nothing(
    make_fetcher: Callable[..., Fetcher], blob_url: str, payload: bytes, cache: ContentCache
) -> None:
    wrong = sha(b"something else")
    with pytest.raises(VerificationError) as err:
        make_fetcher().fetch_blob(blob_url, sha256=wrong, size=len(payload), what="blob")
    assert str(err.value) == (
        f"blob: {blob_url}: sha256 mismatch: expected {wrong}, got {sha(payload)}"
    )
    assert list(cache.blobs_dir.iterdir()) == []
    assert cache.lookup_url(blob_url) is None
    no_leftovers(cache)


def test_connection_refused_is_retried_then_reported(make_fetcher: Callable[..., Fetcher]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x"
    with pytest.raises(FetchError) as err:
        make_fetcher(retries=1).fetch_blob(url, sha256=None, size=None, what="blob")
    assert str(err.value) == f"blob: {url}: connection refused after 2 attempts"


def test_read_timeout_is_retried_then_reported(
    make_fetcher: Callable[..., Fetcher], served: Server, blob_url: str, payload: bytes
) -> None:
    served.faults.stall(NAME, times=1, seconds=1.0)
    fetcher = make_fetcher(read_timeout=0.2)
    assert fetcher.fetch_blob(blob_url, sha256=None, size=None, what="blob").read_bytes() == payload
    served.faults.stall("slow.bin", times=10, seconds=1.0)
    (served.root / "slow.bin").write_bytes(b"x")
    url = served.url_for("slow.bin")
    with pytest.raises(FetchError) as err:
        make_fetcher(read_timeout=0.2, retries=1).fetch_blob(url, sha256=None, size=None, what="blob")
    assert str(err.value) == f"blob: {url}: timed out after 2 attempts"


def test_missing_local_file(make_fetcher: Callable[..., Fetcher], tmp_path: Path) -> None:
    url = (tmp_path / "nope.bin").as_uri()
    with pytest.raises(NotFoundError) as err:
        make_fetcher().fetch_blob(url, sha256=None, size=None, what="blob")
    assert str(err.value) == f"blob: {url}: file not found"


def test_unsupported_scheme(make_fetcher: Callable[..., Fetcher]) -> None:
    with pytest.raises(FetchError) as err:
        make_fetcher().fetch_metadata("ftp://example.org/x", what="key")
    assert str(err.value) == "key: ftp://example.org/x: unsupported URL scheme 'ftp'"


def test_offline_blob_hit_and_miss(
    make_fetcher: Callable[..., Fetcher], served: Server, blob_url: str, payload: bytes
) -> None:
    make_fetcher().fetch_blob(blob_url, sha256=sha(payload), size=None, what="blob")
    offline = make_fetcher(offline=True)
    assert offline.fetch_blob(blob_url, sha256=sha(payload), size=None, what="blob").read_bytes() == payload
    assert offline.fetch_blob(blob_url, sha256=None, size=None, what="blob").read_bytes() == payload
    other = served.url_for("other.bin")
    with pytest.raises(OfflineError) as err:
        offline.fetch_blob(other, sha256="c" * 64, size=None, what="package foo")
    assert str(err.value) == (
        f"package foo: {other} is not in the cache and --offline was given; "
        "run once without --offline to fill the cache"
    )
    assert served.count(NAME) == 1
    assert served.count("other.bin") == 0


def test_metadata_is_cached_for_its_ttl(
    make_fetcher: Callable[..., Fetcher], served: Server
) -> None:
    (served.root / "latest-releases.yaml").write_bytes(b"- one\n")
    url = served.url_for("latest-releases.yaml")
    now = [1000.0]
    fetcher = make_fetcher(metadata_ttl=60)
    fetcher.clock = lambda: now[0]
    assert fetcher.fetch_metadata(url, what="yaml") == b"- one\n"
    (served.root / "latest-releases.yaml").write_bytes(b"- two\n")
    now[0] += 30
    assert fetcher.fetch_metadata(url, what="yaml") == b"- one\n"
    assert served.count("latest-releases.yaml") == 1
    assert fetcher.fetch_metadata(url, what="yaml", refresh=True) == b"- two\n"
    now[0] += 61
    (served.root / "latest-releases.yaml").write_bytes(b"- three\n")
    assert fetcher.fetch_metadata(url, what="yaml") == b"- three\n"
    assert served.count("latest-releases.yaml") == 3
    assert [i.sha256 for i in fetcher.inputs] == [
        sha(b"- one\n"), sha(b"- two\n"), sha(b"- three\n")
    ]


def test_metadata_offline_uses_stale_cache_and_reports_misses(
    make_fetcher: Callable[..., Fetcher], served: Server
) -> None:
    (served.root / "key.asc").write_bytes(b"KEY")
    url = served.url_for("key.asc")
    online = make_fetcher(metadata_ttl=0)
    assert online.fetch_metadata(url, what="release key") == b"KEY"
    offline = make_fetcher(offline=True, metadata_ttl=0)
    assert offline.fetch_metadata(url, what="release key", refresh=True) == b"KEY"
    assert served.count("key.asc") == 1
    missing = served.url_for("x.asc")
    with pytest.raises(OfflineError) as err:
        offline.fetch_metadata(missing, what="signature")
    assert str(err.value) == (
        f"signature: {missing} is not in the cache and --offline was given; "
        "run once without --offline to fill the cache"
    )


def test_metadata_not_found_and_size_limit(
    make_fetcher: Callable[..., Fetcher], served: Server, cache: ContentCache
) -> None:
    url = served.url_for("x.tar.gz.asc")
    with pytest.raises(NotFoundError) as err:
        make_fetcher().fetch_metadata(url, what="signature")
    assert str(err.value) == f"signature: {url}: HTTP 404 Not Found"
    (served.root / "big").write_bytes(b"x" * 2000)
    big = served.url_for("big")
    with pytest.raises(FetchError) as err2:
        make_fetcher().fetch_metadata(big, what="index", max_size=1000)
    assert str(err2.value) == f"index: {big}: larger than the 1000-byte limit"
    no_leftovers(cache)


def test_metadata_retries_resets(make_fetcher: Callable[..., Fetcher], served: Server,
                                 payload: bytes) -> None:
    (served.root / "APKINDEX.tar.gz").write_bytes(payload)
    served.faults.reset("APKINDEX.tar.gz", times=2, after=65536)
    assert make_fetcher().fetch_metadata(served.url_for("APKINDEX.tar.gz"), what="index") == payload
    ranges = [r.headers.get("Range") for r in served.requests_for("APKINDEX.tar.gz")]
    assert ranges == [None, "bytes=65536-", "bytes=131072-"]


def test_progress_bar_goes_to_stderr(
    make_fetcher: Callable[..., Fetcher], blob_url: str, payload: bytes,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_fetcher(progress=True).fetch_blob(blob_url, sha256=None, size=len(payload), what="blob")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "blob" in captured.err


def test_local_metadata_is_read_every_time_and_recorded_when_it_changes(
    make_fetcher: Callable[..., Fetcher], cache: ContentCache, tmp_path: Path
) -> None:
    key = tmp_path / "key.rsa.pub"
    key.write_bytes(b"one")
    url = key.as_uri()
    fetcher = make_fetcher()
    clock = [1000.0]
    fetcher.clock = lambda: clock[0]
    assert fetcher.fetch_metadata(url, what="key") == b"one"
    first = cache.lookup_url(url)
    assert first is not None and (first.sha256, first.fetched_at) == (sha(b"one"), 1000.0)
    clock[0] = 2000.0
    assert fetcher.fetch_metadata(url, what="key") == b"one"
    assert cache.lookup_url(url) == first  # same bytes: the record is left as it was
    key.write_bytes(b"two")
    assert fetcher.fetch_metadata(url, what="key") == b"two"
    changed = cache.lookup_url(url)
    assert changed is not None and (changed.sha256, changed.fetched_at) == (sha(b"two"), 2000.0)
    assert make_fetcher(offline=True).fetch_metadata(url, what="key") == b"two"
    no_leftovers(cache)


@pytest.mark.parametrize(("value", "shown"), [
    ("²", "'²'"), ("9" * 5000, "'" + "9" * 60 + "…' (5000 characters)"), ("-1", "'-1'"),
    ("1_000", "'1_000'"), ("0x10", "'0x10'"), ("1, 2", "'1, 2'"),
])
def test_a_content_length_that_is_not_a_number_ends_the_download(
    make_fetcher: Callable[..., Fetcher], served: Server, blob_url: str, cache: ContentCache,
    value: str, shown: str,
) -> None:
    """RFC 9110: a Content-Length that cannot frame the body is an error, not a retry."""
    served.faults.headers(NAME, {"Content-Length": value})
    with pytest.raises(FetchError) as err:
        make_fetcher().fetch_blob(blob_url, sha256=None, size=None, what="blob")
    message = str(err.value)
    if "unmatching" in message:  # urllib3 refuses two different lengths itself
        assert message.startswith(f"blob: {blob_url}: ")
    else:
        assert message == f"blob: {blob_url}: malformed Content-Length header {shown}"
    assert served.count(NAME) == 1
    no_leftovers(cache)


def test_repeated_equal_content_lengths_are_one_length(
    make_fetcher: Callable[..., Fetcher], served: Server, blob_url: str, payload: bytes
) -> None:
    served.faults.headers(NAME, {"Content-Length": f"{len(payload)}, {len(payload)}"})
    path = make_fetcher().fetch_blob(blob_url, sha256=sha(payload), size=None, what="blob")
    assert path.read_bytes() == payload


@pytest.mark.parametrize("content_range", [
    "bytes 1000-1999/" + "9" * 5000, "bytes ¹²³-1999/2000", "bytes 1000-999/2000",
    "bytes 1000-1999/²", "bits 1000-1999/2000", "bytes 1000-1999/1500",
])
def test_a_malformed_content_range_is_a_wrong_range(
    make_fetcher: Callable[..., Fetcher], served: Server, blob_url: str, payload: bytes,
    cache: ContentCache, content_range: str,
) -> None:
    served.faults.truncate(NAME, times=1, to=65536)
    served.faults.headers(NAME, {"Content-Range": content_range})
    with pytest.raises(FetchError) as err:
        make_fetcher(retries=1).fetch_blob(blob_url, sha256=sha(payload), size=len(payload),
                                           what="blob")
    assert str(err.value) == (f"blob: {blob_url}: server answered the resume request with the "
                              "wrong range after 2 attempts")
    no_leftovers(cache)


def test_validators_a_server_sends_are_kept_only_when_they_can_be_sent_back(
    make_fetcher: Callable[..., Fetcher], served: Server, blob_url: str, cache: ContentCache
) -> None:
    served.faults.headers(NAME, {"ETag": '"a\x7fb"', "Last-Modified": "x" * 5000})
    make_fetcher().fetch_metadata(blob_url, what="blob")
    record = cache.lookup_url(blob_url)
    assert record is not None and record.etag is None and record.last_modified is None
