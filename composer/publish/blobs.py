"""Blobs into one repository: existence checks, cross-repository mounts, and uploads.

A blob up to the chunk size goes up monolithically (``POST`` then ``PUT ?digest=``); a
larger one in chunks (``PATCH`` with ``Content-Range``, then ``PUT ?digest=``). After a
reset, a timeout or a 5xx the fetcher's retry policy applies; a chunked upload first asks
the registry how far it got (``GET`` on the upload URL, ``Range: 0-<end>``) and resumes
from there, and starts a new upload when the registry cannot say (it may have dropped the
session, as distribution does when a chunk was cut off half-way).
"""

from __future__ import annotations

import io
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from composer.errors import VerificationError
from composer.publish.layout import Blob
from composer.publish.session import RegistrySession, small_body
from composer.publish.wire import (
    RegistryError,
    error_codes,
    error_summary,
    parse_length,
    parse_range_end,
    resolve_location,
)
from composer.sources.fetch import Retryable, with_retries

if TYPE_CHECKING:
    import requests

OCTETS = "application/octet-stream"
READ_BLOCK = 256 * 1024
MAX_CHUNK_MIN = 1 << 30


class RegistryDigestError(VerificationError):
    """The registry says a blob's bytes do not hash to its digest (exit 4)."""


class _Reader:
    """``length`` bytes of a file (or of bytes) from ``offset``, read as requests sends them;
    ``on_bytes`` drives a progress bar."""

    def __init__(self, blob: Blob, offset: int, length: int,
                 on_bytes: Callable[[int], None] | None) -> None:
        self._left = length
        self._on_bytes = on_bytes
        if blob.data is not None:
            self._fh: Any = io.BytesIO(blob.data)
        else:
            assert blob.path is not None
            self._fh = open(blob.path, "rb")
        self._fh.seek(offset)

    def __len__(self) -> int:
        return self._left

    def read(self, size: int = -1) -> bytes:
        want = self._left if size is None or size < 0 else min(size, self._left)
        data = self._fh.read(want) if want else b""
        self._left -= len(data)
        if self._on_bytes is not None and data:
            self._on_bytes(len(data))
        return data

    def close(self) -> None:
        self._fh.close()


@dataclass
class _Upload:
    """Where a chunked upload stands: its URL and how many bytes the registry has."""

    location: str | None = None
    offset: int = 0
    min_chunk: int = 0


@dataclass(frozen=True)
class Progress:
    """What a push hands in to watch an upload: a callback for the bytes sent (a tqdm bar)."""

    on_bytes: Callable[[int], None] | None = None


class BlobMover:
    """Moves blobs into the session's repository."""

    def __init__(self, session: RegistrySession) -> None:
        self.session = session
        self.settings = session.settings

    def _retry(self, step: str, url: str, attempt: Callable[[], Any]) -> Any:
        where = self.session.where(step)
        return with_retries(self.settings.network, attempt, what=where, url=url)

    def exists(self, blob: Blob) -> bool:
        """``HEAD`` the blob: True when the repository has it (with the right size)."""
        step = f"checking {blob.role} {_short(blob.digest)}"
        url = self.session.url(f"blobs/{blob.digest}")

        def attempt() -> bool:
            with self.session.send("HEAD", url, where=self.session.where(step)) as response:
                if response.status_code == 404:
                    return False
                expect_status(response, (200,), self.session.where(step))
                size = parse_length(response.headers.get("Content-Length"))
                if size is not None and size != blob.size:
                    raise RegistryError(f"{self.session.where(step)}: the registry has it with "
                                        f"{size} bytes, but it has {blob.size}")
                return True

        return bool(self._retry(step, url, attempt))

    def mount(self, blob: Blob, source: str) -> bool:
        """Ask the registry to link the blob from ``source`` (a repository of the same
        registry); True when it did."""
        step = f"mounting {blob.role} {_short(blob.digest)} from {source}"
        query = urllib.parse.urlencode({"mount": blob.digest, "from": source})
        url = self.session.url(f"blobs/uploads/?{query}")

        def attempt() -> bool:
            headers = {"Content-Length": "0"}
            with self.session.send("POST", url, where=self.session.where(step),
                                   headers=headers) as response:
                if response.status_code == 201:
                    return True
                if response.status_code == 202:
                    self._cancel(response, url)
                    return False
                if response.status_code in (404, 400):
                    return False
                expect_status(response, (201,), self.session.where(step))
                return False

        return bool(self._retry(step, url, attempt))

    def upload(self, blob: Blob, progress: Progress | None = None) -> None:
        """Send the blob: monolithic up to the chunk size, in chunks above it."""
        on_bytes = progress.on_bytes if progress else None
        if blob.size <= self.settings.chunk_size:
            self._monolithic(blob, on_bytes)
        else:
            self._chunked(blob, on_bytes)

    # -- uploads -------------------------------------------------------------

    def _start(self, step: str) -> _Upload:
        url = self.session.url("blobs/uploads/")
        where = self.session.where(step)
        with self.session.send("POST", url, where=where, headers={"Content-Length": "0"}) as response:
            expect_status(response, (202,), where)
            location = resolve_location(url, response.headers.get("Location"), what=where)
            min_chunk = parse_length(response.headers.get("OCI-Chunk-Min-Length")) or 0
        return _Upload(location=location, min_chunk=min(min_chunk, MAX_CHUNK_MIN))

    def _monolithic(self, blob: Blob, on_bytes: Callable[[int], None] | None) -> None:
        step = f"uploading {blob.role} {_short(blob.digest)}"
        where = self.session.where(step)

        def attempt() -> None:
            upload = self._start(step)
            assert upload.location is not None
            url = _with_digest(upload.location, blob.digest)
            headers = {"Content-Type": OCTETS, "Content-Length": str(blob.size)}
            with self.session.send("PUT", url, where=where, headers=headers,
                                   body=lambda: _Reader(blob, 0, blob.size, on_bytes)) as response:
                self._finished(response, blob, where)

        self._retry(step, self.session.url("blobs/uploads/"), attempt)

    def _chunked(self, blob: Blob, on_bytes: Callable[[int], None] | None) -> None:
        step = f"uploading {blob.role} {_short(blob.digest)} in chunks"
        where = self.session.where(step)
        state = _Upload()

        def attempt() -> None:
            nonlocal state
            if state.location is None or not self._resume(state, where):
                state = self._start(step)
            while state.offset < blob.size:
                self._patch(blob, state, where, on_bytes)
            assert state.location is not None
            url = _with_digest(state.location, blob.digest)
            with self.session.send("PUT", url, where=where,
                                   headers={"Content-Length": "0"}) as response:
                if response.status_code in (404, 416):
                    state.location = None
                    raise Retryable(f"the registry lost the upload (HTTP {response.status_code})")
                self._finished(response, blob, where)

        self._retry(step, self.session.url("blobs/uploads/"), attempt)

    def _patch(self, blob: Blob, state: _Upload, where: str,
               on_bytes: Callable[[int], None] | None) -> None:
        assert state.location is not None
        length = min(max(self.settings.chunk_size, state.min_chunk), blob.size - state.offset)
        start = state.offset
        headers = {"Content-Type": OCTETS, "Content-Length": str(length),
                   "Content-Range": f"{start}-{start + length - 1}"}
        with self.session.send("PATCH", state.location, where=where, headers=headers,
                               body=lambda: _Reader(blob, start, length, on_bytes)) as response:
            if response.status_code in (404, 416):
                raise Retryable(f"the registry refused chunk {start}-{start + length - 1} "
                                f"(HTTP {response.status_code})")
            expect_status(response, (202, 204), where)
            state.location = resolve_location(state.location, response.headers.get("Location"),
                                              what=where)
            end = parse_range_end(response.headers.get("Range"))
            state.offset = start + length if end is None else end + 1
            if state.offset != start + length:
                raise Retryable(f"the registry kept {state.offset - start} of {length} bytes")

    def _resume(self, state: _Upload, where: str) -> bool:
        """Ask how far the upload got; True when it can go on from there."""
        assert state.location is not None
        try:
            with self.session.send("GET", state.location, where=where) as response:
                if response.status_code != 204:
                    return False
                end = parse_range_end(response.headers.get("Range"))
                state.offset = 0 if end is None else end + 1
                state.location = resolve_location(state.location,
                                                  response.headers.get("Location"), what=where)
        except (RegistryError, Retryable):
            return False
        if self.settings.network.log is not None:
            self.settings.network.log(f"{where}: resuming at byte {state.offset}")
        return True

    def _finished(self, response: requests.Response, blob: Blob, where: str) -> None:
        if response.status_code in (201, 204):
            return
        body = small_body(response)
        if "DIGEST_INVALID" in error_codes(body, response.headers.get("Content-Type")):
            source = blob.path or "the bytes made for the push"
            raise RegistryDigestError(
                f"{where}: the registry reports a digest mismatch: {source} does not hash to "
                f"{blob.digest} (run alpine-composer verify)")
        expect_status(response, (201, 204), where, body=body)

    def _cancel(self, response: requests.Response, base: str) -> None:
        """Drop an upload session a failed mount opened (best effort)."""
        try:
            location = resolve_location(base, response.headers.get("Location"), what="")
            self.session.send("DELETE", location, where="").close()
        except (RegistryError, Retryable):
            pass


def expect_status(response: requests.Response, ok: tuple[int, ...], where: str,
            body: bytes | None = None) -> None:
    """Nothing when the status is one of ``ok``; else the one-line RegistryError for it."""
    if response.status_code in ok:
        return
    detail = error_summary(small_body(response) if body is None else body,
                           response.headers.get("Content-Type"))
    hint = ""
    if response.status_code == 404:
        hint = " (no such repository, or the registry does not allow pushing to it)"
    elif response.status_code == 415:
        hint = " (the registry does not accept this media type)"
    raise RegistryError(f"{where}: HTTP {response.status_code} {response.reason or ''}".rstrip()
                        + (f": {detail}" if detail else "") + hint)


def _with_digest(location: str, digest: str) -> str:
    parts = urllib.parse.urlsplit(location)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query.append(("digest", digest))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _short(digest: str) -> str:
    return digest[:19]
