"""The one file hasher: sha256 and size of a file or stream, read in fixed chunks."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO

CHUNK = 1 << 20


def hash_stream(stream: IO[bytes]) -> tuple[str, int]:
    """Return (sha256 hex, size) of what is left in ``stream``, without holding it in memory."""
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def hash_file(path: Path) -> tuple[str, int]:
    """Return (sha256 hex, size) of a file."""
    with open(path, "rb") as f:
        return hash_stream(f)
