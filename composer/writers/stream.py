"""Stream wrappers that hash and count what passes through, so no blob is read twice."""

from __future__ import annotations

import hashlib
import queue
import threading
import weakref
from typing import BinaryIO

BATCH = 1024 * 1024
"""Bytes gathered before they are queued for the hashing thread as one job."""

DEPTH = 3
"""Jobs that may wait for the hashing thread before a writer blocks (bounds memory)."""

_Batch = list[bytes] | None


def _hash_batches(jobs: queue.Queue[_Batch], digest: hashlib._Hash,
                  failure: list[BaseException]) -> None:
    while (batch := jobs.get()) is not None:
        try:
            for data in batch:
                digest.update(data)
        except BaseException as exc:  # noqa: BLE001 - reported by hexdigest
            failure.append(exc)


class HashingWriter:
    """Write-through wrapper recording the sha256 and size of everything written.

    Writing and hashing overlap: once more than :data:`BATCH` bytes went through,
    written bytes are hashed in order on a helper thread (hashlib releases the GIL)
    while the caller goes on producing and writing the next ones. The digest is the
    same as hashing inline.
    """

    def __init__(self, out: BinaryIO | None) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self.size = 0
        self._batch: list[bytes] = []
        self._batch_size = 0
        self._jobs: queue.Queue[_Batch] | None = None
        self._thread: threading.Thread | None = None
        self._failure: list[BaseException] = []

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._out is not None:
            self._out.write(data)
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        if size:
            # A caller may reuse a mutable buffer once write returns: keep a private copy.
            self._batch.append(data if type(data) is bytes else bytes(data))
            self._batch_size += size
            self.size += size
            if self._batch_size >= BATCH:
                self._queue_batch()
        return size

    def _queue_batch(self) -> None:
        if self._jobs is None:
            self._jobs = queue.Queue(DEPTH)
            self._thread = threading.Thread(target=_hash_batches, name="sha256", daemon=True,
                                            args=(self._jobs, self._hash, self._failure))
            self._thread.start()
            # An abandoned writer (an error mid-output) must not leave the thread waiting.
            weakref.finalize(self, self._jobs.put, None)
        batch, self._batch, self._batch_size = self._batch, [], 0
        self._jobs.put(batch)

    def _settle(self) -> None:
        """Hash everything written so far: the digest must cover all of it."""
        if self._jobs is not None and self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._jobs = self._thread = None
        if self._failure:
            raise self._failure[0]
        batch, self._batch, self._batch_size = self._batch, [], 0
        for data in batch:
            self._hash.update(data)

    def flush(self) -> None:
        if self._out is not None:
            self._out.flush()

    @property
    def hexdigest(self) -> str:
        self._settle()
        return self._hash.hexdigest()

    @property
    def digest(self) -> str:
        """The OCI-style ``sha256:<hex>`` form."""
        return "sha256:" + self.hexdigest
