"""Content-addressed download cache shared safely between concurrent builds.

Blobs live at ``blobs/sha256/<hex>`` and are immutable: two processes writing
the same digest write the same bytes, so a plain ``os.replace`` is enough.
URL records (``urls/<sha256(url)>.json``) map a URL to the blob it last
served; they change over time, so their writes take an exclusive flock.
Everything is written to ``tmp/`` first and renamed into place, so a reader never
sees a half-written entry. A blob's bytes are fsynced before its rename (once, by
whoever wrote them); neither the rename nor a URL record is: after a crash either may
be missing, or a record empty, which reads as no record, so the next build fetches
again. That keeps an empty-cache build to one fsync per download instead of four.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from composer.errors import CacheError, ComposerError, VerificationError
from composer.hashing import hash_file
from composer.jsonsafe import load_json_file
from composer.leftovers import pid_tag, sweep_dead

_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_RECORD_BYTES = 64 * 1024
MAX_VALIDATOR = 1024
_VALIDATOR = re.compile(r"[\x20-\x7e]*")
"""An ETag or Last-Modified value sent back to the server: printable ASCII on one line."""


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """``$XDG_CACHE_HOME/alpine-composer``, else ``~/.cache/alpine-composer`` (env passed in).

    The XDG spec says a relative ``XDG_CACHE_HOME`` is invalid and must be ignored."""
    xdg = env.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "alpine-composer"
    home = env.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".cache" / "alpine-composer"


@contextlib.contextmanager
def cache_writes(root: Path) -> Iterator[None]:
    """Turn an OS error while writing the cache (read-only, disk full) into one clear line."""
    try:
        yield
    except OSError as exc:
        if type(exc).__module__.split(".", 1)[0] in ("requests", "urllib3"):
            raise  # a network error that happens to derive from OSError: not the cache's fault
        where = exc.filename or root
        raise CacheError(f"cache folder {root}: cannot write {where}: "
                         f"{exc.strerror or exc}") from exc


def usable_validator(value: str | None) -> str | None:
    """``value`` when it can be sent back as an If-None-Match or If-Modified-Since header
    (printable ASCII, at most 1 KiB), else None: a hostile server's ETag must not break the
    next request."""
    if value is None or len(value) > MAX_VALIDATOR or not _VALIDATOR.fullmatch(value):
        return None
    return value


@dataclass(frozen=True)
class UrlRecord:
    """What a URL served when it was last fetched."""

    url: str
    sha256: str
    size: int
    fetched_at: float
    etag: str | None = None
    last_modified: str | None = None


class ContentCache:
    """A directory of verified blobs keyed by sha256, plus URL records."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs" / "sha256"
        self.urls_dir = self.root / "urls"
        self.tmp_dir = self.root / "tmp"
        self._lock_path = self.root / "urls.lock"
        self._ready = False

    def _ensure_dirs(self) -> None:
        if self._ready:
            return
        try:
            for directory in (self.blobs_dir, self.urls_dir, self.tmp_dir):
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"cache folder {self.root}: cannot create: {exc.strerror}") from exc
        if not os.access(self.tmp_dir, os.W_OK | os.X_OK):
            raise CacheError(f"cache folder {self.root}: not writable (use --cache-dir)")
        sweep_dead(self.tmp_dir, "")
        self._ready = True

    def path_for(self, sha256: str) -> Path | None:
        """The blob's path when the cache holds it, else None."""
        sha256 = sha256.lower()
        if not _HEX64.fullmatch(sha256):
            return None
        path = self.blobs_dir / sha256
        return path if path.is_file() else None

    def discard(self, path: Path) -> None:
        """Remove a damaged blob so that the next build fetches it again."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    @contextlib.contextmanager
    def temp_file(self, suffix: str = ".part") -> Iterator[Path]:
        """A fresh empty file in ``tmp/`` (same filesystem as blobs); removed unless moved away."""
        self._ensure_dirs()
        try:
            fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix=pid_tag(), suffix=suffix)
        except OSError as exc:
            raise CacheError(f"cache folder {self.tmp_dir}: cannot create a file: "
                             f"{exc.strerror}") from exc
        os.close(fd)
        path = Path(name)
        try:
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def put_bytes(self, data: bytes, *, sha256: str | None = None) -> Path:
        """Store bytes; when ``sha256`` is given the data must match it."""
        actual = hashlib.sha256(data).hexdigest()
        if sha256 is not None and actual != sha256.lower():
            raise VerificationError(
                f"cache: sha256 mismatch: expected {sha256.lower()}, got {actual}"
            )
        existing = self.path_for(actual)
        if existing is not None:
            return existing
        with self.temp_file() as tmp:
            with cache_writes(self.root), open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return self.install_verified(tmp, actual)

    def put_file(self, tmp: Path, sha256: str) -> Path:
        """Move ``tmp`` (inside ``tmp/``) into the store after re-checking its digest."""
        actual, _ = hash_file(tmp)
        if actual != sha256.lower():
            raise VerificationError(
                f"cache: {tmp.name}: sha256 mismatch: expected {sha256.lower()}, got {actual}"
            )
        with cache_writes(self.root), open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        return self.install_verified(tmp, actual)

    def install_verified(self, tmp: Path, sha256: str) -> Path:
        """Rename a verified temp file whose bytes the caller fsynced to its content
        address (no re-hash, no second fsync)."""
        self._ensure_dirs()
        final = self.blobs_dir / sha256
        with cache_writes(self.root):
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
        return final

    def remember_url(
        self,
        url: str,
        sha256: str,
        size: int,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        fetched_at: float | None = None,
    ) -> UrlRecord:
        """Record that ``url`` served the blob ``sha256`` (atomic, under the cache lock)."""
        record = UrlRecord(
            url=url,
            sha256=sha256.lower(),
            size=size,
            fetched_at=time.time() if fetched_at is None else fetched_at,
            etag=etag,
            last_modified=last_modified,
        )
        self._ensure_dirs()
        payload = json.dumps(asdict(record), sort_keys=True, separators=(",", ":")).encode()
        with cache_writes(self.root), self._locked():
            with self.temp_file(suffix=".json") as tmp:
                tmp.write_bytes(payload)
                os.replace(tmp, self._url_record_path(url))
        return record

    def lookup_url(self, url: str) -> UrlRecord | None:
        """The last record for ``url``, or None when absent, unreadable or malformed (the
        cache is self-healing: such a record is as good as none)."""
        path = self._url_record_path(url)
        try:
            raw = load_json_file(path, what=str(path), max_bytes=MAX_RECORD_BYTES, max_depth=2)
            digest = raw.field("sha256")
            if not _HEX64.fullmatch(digest.str(max_len=64)):
                digest.fail("not 64 lowercase hex digits")
            etag, modified = raw.optional("etag"), raw.optional("last_modified")
            record = UrlRecord(
                url=raw.field("url").str(max_len=MAX_RECORD_BYTES),
                sha256=digest.str(),
                size=raw.field("size").int(),
                fetched_at=raw.field("fetched_at").number(),
                etag=usable_validator(etag.str() if etag is not None else None),
                last_modified=usable_validator(modified.str() if modified is not None else None),
            )
        except (FileNotFoundError, ComposerError):
            return None
        return record if record.url == url else None

    def _url_record_path(self, url: str) -> Path:
        return self.urls_dir / (hashlib.sha256(url.encode()).hexdigest() + ".json")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock_path, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
