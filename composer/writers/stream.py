"""Stream wrappers that hash and count what passes through, so no blob is read twice."""

from __future__ import annotations

import hashlib
from typing import BinaryIO


class HashingWriter:
    """Write-through wrapper recording the sha256 and size of everything written."""

    def __init__(self, out: BinaryIO | None) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._hash.update(data)
        self.size += len(data)
        if self._out is not None:
            self._out.write(data)
        return len(data)

    def flush(self) -> None:
        if self._out is not None:
            self._out.flush()

    @property
    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    @property
    def digest(self) -> str:
        """The OCI-style ``sha256:<hex>`` form."""
        return "sha256:" + self._hash.hexdigest()
