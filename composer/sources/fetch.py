"""The one place that talks to the network (and reads file:// URLs).

Blobs are content-addressed: a cached digest is returned without touching the
network, and new downloads are checked for size and sha256 before they enter
the cache. Metadata (indexes, checksum files, signatures, keys) is cached per
URL with a time-to-live and served from the cache under ``--offline``.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

if TYPE_CHECKING:
    import requests

from composer.errors import ComposerError, FetchError, NotFoundError, OfflineError, VerificationError
from composer.hashing import hash_file
from composer.manifest import InputRole
from composer.numbers import parse_decimal, shorten
from composer.sources.cache import ContentCache, UrlRecord, cache_writes, usable_validator

_CHUNK = 64 * 1024
METADATA_MAX_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True)
class FetchSettings:
    """Network behaviour; the CLI fills it from flags (progress when stderr is a TTY)."""

    connect_timeout: float = 10.0
    read_timeout: float = 10.0
    retries: int = 4
    backoff: float = 0.5
    offline: bool = False
    progress: bool = False
    metadata_ttl: float = 3600.0
    log: Callable[[str], None] | None = None


@dataclass(frozen=True)
class FetchedInput:
    """One input of the build, for the manifest; ``role`` is what the caller fetched it as."""

    url: str
    sha256: str
    size: int
    role: InputRole = InputRole.METADATA


@dataclass(frozen=True)
class _Downloaded:
    """What a response said beside its body: unchanged (304), and its cache validators."""

    not_modified: bool = False
    etag: str | None = None
    last_modified: str | None = None


class Retryable(Exception):
    """One attempt failed in a way another attempt may fix (a timeout, a reset, a 5xx)."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


T = TypeVar("T")


@contextmanager
def transport_retries() -> Iterator[None]:
    """The one rule for requests' transport failures: a timeout, a refused, reset or cut
    connection (also mid-body) is :class:`Retryable`, named in a few words."""
    import requests

    try:
        yield
    except requests.Timeout as exc:
        raise Retryable("timed out") from exc
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
        raise Retryable(connection_cause(exc)) from exc


def with_retries(settings: FetchSettings, attempt: Callable[[], T], *, what: str, url: str,
                 sleep: Callable[[float], None] = time.sleep,
                 give_up: Callable[[str, str], ComposerError] | None = None) -> T:
    """The one retry policy of every network client: run ``attempt`` until it returns; a
    :class:`Retryable` failure is logged and tried again after ``backoff`` seconds, doubled
    each time, ``retries`` times; then ``give_up(cause, "N attempts")`` (default: a
    FetchError naming ``what``, ``url``, the cause and the count) is raised."""
    attempts = settings.retries + 1
    cause = ""
    for number in range(1, attempts + 1):
        try:
            return attempt()
        except Retryable as failure:
            cause = failure.cause
        if number < attempts:
            wait = settings.backoff * (2 ** (number - 1))
            if settings.log is not None:
                settings.log(f"warning: {what}: {url}: {cause} (attempt {number} of "
                             f"{attempts}); retrying in {wait:g} s")
            sleep(wait)
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    if give_up is not None:
        raise give_up(cause, tries)
    raise FetchError(f"{what}: {url}: {cause} after {tries}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_file_url(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme == "file"


@dataclass
class Fetcher:
    """Downloads through a ContentCache; records every input it hands out."""

    settings: FetchSettings
    cache: ContentCache
    session: requests.Session | None = None
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    _inputs: list[FetchedInput] = field(default_factory=list, init=False, repr=False)
    _seen: set[tuple[str, str]] = field(default_factory=set, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def inputs(self) -> list[FetchedInput]:
        """Every URL fetched or served from cache, in first-use order, without duplicates."""
        with self._lock:
            return list(self._inputs)

    def _record(self, url: str, sha256: str, size: int, role: InputRole) -> None:
        key = (url, sha256)
        with self._lock:
            if key not in self._seen:
                self._seen.add(key)
                self._inputs.append(FetchedInput(url=url, sha256=sha256, size=size, role=role))

    def _remember(self, url: str, sha256: str, size: int, *, etag: str | None,
                  last_modified: str | None, role: InputRole) -> None:
        """Note a fresh download (or a revalidated copy) in the cache and in this build's inputs."""
        self.cache.remember_url(url, sha256, size, etag=etag, last_modified=last_modified,
                                fetched_at=self.clock())
        self._record(url, sha256, size, role)

    # -- blobs ---------------------------------------------------------------

    def fetch_blob(
        self,
        url: str,
        *,
        sha256: str | None,
        size: int | None,
        what: str,
        check: Callable[[Path], None] | None = None,
        max_size: int | None = None,
        rehash: bool = True,
        role: InputRole = InputRole.METADATA,
    ) -> Path:
        """Return a cached, verified file holding ``url``'s content.

        With ``sha256`` known, a cache hit needs no network. Without it the
        download is stored under its computed digest. ``check`` (e.g. a
        signature check) runs on the bytes before they enter the cache, and on
        a cache hit too; whatever it raises propagates and nothing is stored.
        ``max_size`` bounds a download whose exact size is for ``check`` to judge.
        A cached copy is hashed again before use (``rehash=False`` for callers that hash
        it themselves while reading); a damaged one is dropped and fetched again.
        ``role`` (minirootfs, package …) is recorded with the input for the manifest.
        """
        expected = sha256.lower() if sha256 else None
        if expected is not None:
            cached = self._intact(expected, what, rehash=rehash)
            if cached is not None:
                if check is not None:
                    check(cached)
                self._record(url, expected, cached.stat().st_size, role)
                return cached
        elif self.settings.offline:
            record = self.cache.lookup_url(url)
            cached = self._intact(record.sha256, what, rehash=rehash) if record else None
            if record is not None and cached is not None:
                if check is not None:
                    check(cached)
                self._record(url, record.sha256, record.size, role)
                return cached
        if self.settings.offline and not _is_file_url(url):
            raise OfflineError(
                f"{what}: {url} is not in the cache and --offline was given; "
                "run once without --offline to fill the cache"
            )
        with self.cache.temp_file() as tmp:
            meta = self._download(url, tmp, what=what, size=size, max_size=max_size)
            actual, got = hash_file(tmp)
            if size is not None and got != size:
                raise FetchError(f"{what}: {url}: got {got} of {size} bytes")
            if expected is not None and actual != expected:
                raise VerificationError(
                    f"{what}: {url}: sha256 mismatch: expected {expected}, got {actual}"
                )
            if check is not None:
                check(tmp)
            path = self.cache.install_verified(tmp, actual)
        self._remember(url, actual, got, etag=meta.etag, last_modified=meta.last_modified,
                       role=role)
        return path

    def fetch_pinned(self, urls: list[str], *, sha256: str, size: int | None, what: str,
                     check: Callable[[Path], None] | None = None, max_size: int | None = None,
                     role: InputRole = InputRole.METADATA) -> Path:
        """A file whose sha256 a lock pins, from the cache or the first of ``urls`` that
        serves those bytes; the error of the first URL that answered is the one raised (a
        404 only when every URL said so)."""
        errors: list[FetchError | VerificationError] = []
        for url in urls:
            try:
                return self.fetch_blob(url, sha256=sha256, size=size, what=what, check=check,
                                       max_size=max_size, role=role)
            except (FetchError, VerificationError) as exc:
                errors.append(exc)
        found = [e for e in errors if not isinstance(e, NotFoundError)]
        raise (found or errors)[0]

    # -- metadata ------------------------------------------------------------

    def fetch_metadata(
        self, url: str, *, what: str, max_size: int = METADATA_MAX_SIZE, refresh: bool = False,
        role: InputRole = InputRole.METADATA,
        check: Callable[[bytes], object] | None = None,
    ) -> bytes:
        """Return a small file's bytes, from the cache while younger than the TTL.

        Offline, any cached copy is used; a missing one is an OfflineError.
        A 404 raises NotFoundError so callers can treat optional files apart.
        ``check`` (a parser or signature check) runs on new bytes before they enter
        the cache; whatever it raises propagates and nothing is stored.
        """
        record = self.cache.lookup_url(url)
        cached = self.cache.path_for(record.sha256) if record else None
        local = _is_file_url(url)
        if record is not None and cached is not None and not local:
            fresh = self.clock() - record.fetched_at < self.settings.metadata_ttl
            if self.settings.offline or (fresh and not refresh):
                data = self._intact_bytes(cached, record.sha256, what)
                if data is not None:
                    self._record(url, record.sha256, record.size, role)
                    return data
                cached = None
        if self.settings.offline and not local:
            raise OfflineError(
                f"{what}: {url} is not in the cache and --offline was given; "
                "run once without --offline to fill the cache"
            )
        if local:
            return self._local_metadata(url, record if cached is not None else None, what=what,
                                        max_size=max_size, role=role, check=check)
        conditional = record if cached is not None else None
        with self.cache.temp_file() as tmp:
            meta = self._download(
                url, tmp, what=what, size=None, max_size=max_size, conditional=conditional
            )
            if meta.not_modified and record is not None and cached is not None:
                data = self._intact_bytes(cached, record.sha256, what)
                if data is not None:
                    self._remember(url, record.sha256, record.size, etag=record.etag,
                                   last_modified=record.last_modified, role=role)
                    return data
                meta = self._download(url, tmp, what=what, size=None, max_size=max_size)
            data = tmp.read_bytes()
            if check is not None:
                check(data)
            actual, got = hash_file(tmp)
            self.cache.install_verified(tmp, actual)
        self._remember(url, actual, got, etag=meta.etag, last_modified=meta.last_modified,
                       role=role)
        return data

    def _local_metadata(self, url: str, record: UrlRecord | None, *, what: str, max_size: int,
                        role: InputRole, check: Callable[[bytes], object] | None) -> bytes:
        """A small ``file://`` input, read every time straight into memory (no temporary
        file); while its bytes stay the same, its cache copy and record stand as they are
        (no rewrite, no fsync)."""
        data = self._read_file_url(url, what=what, max_size=max_size)
        if check is not None:
            check(data)
        actual = hashlib.sha256(data).hexdigest()
        if record is None or record.sha256 != actual:
            self.cache.put_bytes(data, sha256=actual)
            self._remember(url, actual, len(data), etag=None, last_modified=None, role=role)
        else:
            self._record(url, actual, len(data), role)
        return data

    # -- cache damage --------------------------------------------------------

    def _intact(self, sha256: str, what: str, *, rehash: bool) -> Path | None:
        """The cached blob, hashed again when asked; None when absent or found damaged."""
        cached = self.cache.path_for(sha256)
        if cached is None or not rehash:
            return cached
        actual, _ = hash_file(cached)
        if actual == sha256.lower():
            return cached
        self._drop_damaged(cached, actual, what)
        return None

    def _intact_bytes(self, cached: Path, sha256: str, what: str) -> bytes | None:
        data = cached.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual == sha256.lower():
            return data
        self._drop_damaged(cached, actual, what)
        return None

    def drop_damaged(self, cached: Path, *, what: str, why: str) -> None:
        """Remove a cache entry found damaged (``why``); online the caller fetches it again,
        offline that is the end of the build, with the file named."""
        self.cache.discard(cached)
        if self.settings.offline:
            raise OfflineError(f"{what}: the cache file {cached} is damaged ({why}) and was removed; "
                               "run once without --offline to fetch it again")
        if self.settings.log is not None:
            self.settings.log(f"warning: {what}: the cache file {cached} is damaged ({why}); "
                              "removed it, fetching again")

    def _drop_damaged(self, cached: Path, actual: str, what: str) -> None:
        self.drop_damaged(cached, what=what,
                          why=f"its content hashes to {actual[:12]}…, not to its name")

    # -- transport -----------------------------------------------------------

    def _download(
        self,
        url: str,
        dest: Path,
        *,
        what: str,
        size: int | None,
        max_size: int | None,
        conditional: Any = None,
    ) -> _Downloaded:
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme == "file":
            return self._copy_file_url(url, dest, what=what, max_size=max_size)
        if scheme not in ("http", "https"):
            raise FetchError(f"{what}: {url}: unsupported URL scheme {scheme or '(none)'!r}")

        def give_up(cause: str, tries: str) -> ComposerError:
            if size is not None and cause.startswith("short read"):
                have = dest.stat().st_size
                return FetchError(f"{what}: {url}: got {have} of {size} bytes after {tries}")
            return FetchError(f"{what}: {url}: {cause} after {tries}")

        return with_retries(
            self.settings,
            lambda: self._attempt(url, dest, what=what, size=size, max_size=max_size,
                                  conditional=conditional),
            what=what, url=url, sleep=self.sleep, give_up=give_up)

    def _attempt(
        self,
        url: str,
        dest: Path,
        *,
        what: str,
        size: int | None,
        max_size: int | None,
        conditional: Any,
    ) -> _Downloaded:
        have = dest.stat().st_size
        headers: dict[str, str] = {"Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        elif conditional is not None:
            if conditional.etag:
                headers["If-None-Match"] = conditional.etag
            if conditional.last_modified:
                headers["If-Modified-Since"] = conditional.last_modified
        timeout = (self.settings.connect_timeout, self.settings.read_timeout)
        # requests is imported on the first HTTP request only: file:// mirrors and warm
        # caches never pay for it.
        import requests

        if self.session is None:
            self.session = requests.Session()
        try:
            with transport_retries():
                response = self.session.get(url, headers=headers, stream=True, timeout=timeout)
        except requests.RequestException as exc:
            raise FetchError(f"{what}: {url}: {_first_line(exc)}") from exc
        with response:
            status = response.status_code
            if status == 304 and conditional is not None:
                return _Downloaded(not_modified=True)
            if status in (404, 410):
                raise NotFoundError(f"{what}: {url}: HTTP {status} {response.reason}")
            if status == 416 and have:
                # The partial file no longer fits the remote one: start over.
                dest.write_bytes(b"")
                raise Retryable(f"HTTP {status} for a resumed download")
            if status >= 500 or status == 429:
                raise Retryable(f"HTTP {status}")
            if status not in (200, 206):
                raise FetchError(f"{what}: {url}: HTTP {status} {response.reason}")
            content_range = _content_range(response.headers.get("Content-Range"))
            if status == 206 and (content_range is None or content_range[0] != have):
                dest.write_bytes(b"")
                raise Retryable("server answered the resume request with the wrong range")
            mode = "ab" if status == 206 else "wb"
            total = _expected_total(response, content_range if status == 206 else None,
                                    have if status == 206 else 0, what=what, url=url)
            self._stream_body(response, dest, mode, what=what, url=url,
                              total=size if size is not None else total, limit=max_size)
            got = dest.stat().st_size
            want = size if size is not None else total
            if want is not None and got < want:
                raise Retryable(f"short read: got {got} of {want} bytes")
            return _Downloaded(
                etag=usable_validator(response.headers.get("ETag")),
                last_modified=usable_validator(response.headers.get("Last-Modified")),
            )

    def _stream_body(
        self,
        response: requests.Response,
        dest: Path,
        mode: str,
        *,
        what: str,
        url: str,
        total: int | None,
        limit: int | None,
    ) -> None:

        bar = self._progress_bar(what, total, dest.stat().st_size if mode == "ab" else 0)
        try:
            with cache_writes(self.cache.root), open(dest, mode) as out:
                written = out.tell()
                try:
                    with transport_retries():
                        for chunk in response.iter_content(_CHUNK):
                            written += len(chunk)
                            if limit is not None and written > limit:
                                raise FetchError(f"{what}: {url}: larger than the {limit}-byte limit")
                            if total is not None and written > total:
                                raise FetchError(f"{what}: {url}: more than the expected {total} bytes")
                            out.write(chunk)
                            if bar is not None:
                                bar.update(len(chunk))
                finally:
                    out.flush()
                    os.fsync(out.fileno())
        finally:
            if bar is not None:
                bar.close()

    def _progress_bar(self, what: str, total: int | None, initial: int) -> Any:
        if not self.settings.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=what, unit="B", unit_scale=True,
                    file=sys.stderr, leave=False)

    def _read_file_url(self, url: str, *, what: str, max_size: int) -> bytes:
        """A small local file's bytes, refused past ``max_size``."""
        with self._open_file_url(url, what=what) as src:
            try:
                data = src.read(max_size + 1)
            except OSError as exc:
                raise FetchError(f"{what}: {url}: {exc.strerror or _first_line(exc)}") from exc
        if len(data) > max_size:
            raise FetchError(f"{what}: {url}: larger than the {max_size}-byte limit")
        return data

    def _open_file_url(self, url: str, *, what: str) -> BinaryIO:
        parts = urllib.parse.urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise FetchError(f"{what}: {url}: file:// URLs must name a local path")
        path = Path(urllib.parse.unquote(parts.path))  # url2pathname, on POSIX
        try:
            src = open(path, "rb")
        except FileNotFoundError as exc:
            raise NotFoundError(f"{what}: {url}: file not found") from exc
        except IsADirectoryError as exc:
            raise FetchError(f"{what}: {url}: is a directory") from exc
        except OSError as exc:
            raise FetchError(f"{what}: {url}: {exc.strerror or _first_line(exc)}") from exc
        return src

    def _copy_file_url(self, url: str, dest: Path, *, what: str, max_size: int | None) -> _Downloaded:
        src = self._open_file_url(url, what=what)
        with src, cache_writes(self.cache.root), open(dest, "wb") as out:
            copied = 0
            while True:
                try:
                    chunk = src.read(_CHUNK)
                except OSError as exc:
                    raise FetchError(f"{what}: {url}: {exc.strerror or _first_line(exc)}") from exc
                if not chunk:
                    break
                copied += len(chunk)
                if max_size is not None and copied > max_size:
                    raise FetchError(f"{what}: {url}: larger than the {max_size}-byte limit")
                out.write(chunk)
        return _Downloaded()


def connection_cause(exc: BaseException) -> str:
    """A requests connection error in a few words (the retry log and the final error say it)."""
    text = str(exc).lower()
    if "timed out" in text or "timeout" in text:
        return "timed out"
    if "refused" in text:
        return "connection refused"
    if any(word in text for word in ("reset", "aborted", "broken", "disconnected", "incomplete")):
        return "connection reset"
    if "name or service" in text or "resolve" in text or "nodename" in text:
        return "host not found"
    return "connection failed"


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    """(first byte, full size or None for ``*``) of ``Content-Range: bytes a-b/size``;
    None when absent or malformed."""
    if value is None:
        return None
    unit, _, spec = value.strip().partition(" ")
    span, _, size_text = spec.partition("/")
    first_text, _, last_text = span.partition("-")
    first, last = parse_decimal(first_text), parse_decimal(last_text)
    size = None if size_text == "*" else parse_decimal(size_text)
    if unit != "bytes" or first is None or last is None or last < first:
        return None
    if size_text != "*" and (size is None or size <= last):
        return None
    return first, size


def _expected_total(response: requests.Response, content_range: tuple[int, int | None] | None,
                    offset: int, *, what: str, url: str) -> int | None:
    """The full file size the headers announce, if any. A Content-Length that is not a
    plain number cannot frame the body (RFC 9110, 8.6): the download fails."""
    if content_range is not None and content_range[1] is not None:
        return content_range[1]
    value = response.headers.get("Content-Length")
    if value is None:
        return None
    lengths = {parse_decimal(part.strip()) for part in value.split(",", 16)}
    if None in lengths or len(lengths) != 1:
        raise FetchError(f"{what}: {url}: malformed Content-Length header {shorten(value)}")
    length = lengths.pop()
    assert length is not None
    return offset + length
