"""Where blobs were pushed before, so a push to another repository of the same registry can
mount them instead of uploading (skopeo keeps a blob-info cache for the same reason).

A small JSON file in the cache folder: registry → digest → repositories (the newest last).
It is only a hint: a damaged file is ignored, and a mount the registry refuses falls back
to an upload.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from composer.errors import CacheError
from composer.jsonsafe import load_json

FILE_NAME = "registry-blobs.json"
MAX_REPOS = 8
MAX_DIGESTS = 20_000
MAX_BYTES = 32 << 20


class BlobLocations:
    """Known (registry, repository) homes of blob digests."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.known: dict[str, dict[str, list[str]]] = {}
        self.changed = False
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_BYTES + 1)
        except OSError:
            return
        try:
            doc = load_json(data, what=str(path), error=CacheError, max_bytes=MAX_BYTES)
            for registry, digests in doc.field("registries").members():
                table = self.known.setdefault(registry, {})
                for digest, repos in digests.members():
                    table[digest] = [r.str(max_len=255) for r in repos.items(max_items=MAX_REPOS)]
        except CacheError:
            self.known = {}

    def repositories(self, registry: str, digest: str) -> list[str]:
        """Repositories of ``registry`` known to hold ``digest``, the most recent first."""
        return list(reversed(self.known.get(registry, {}).get(digest, [])))

    def add(self, registry: str, repository: str, digests: Iterable[str]) -> None:
        table = self.known.setdefault(registry, {})
        for digest in digests:
            repos = table.pop(digest, [])
            if repos and repos[-1] == repository:
                table[digest] = repos
                continue
            repos = [r for r in repos if r != repository][-(MAX_REPOS - 1):] + [repository]
            table[digest] = repos
            self.changed = True
        while len(table) > MAX_DIGESTS:
            del table[next(iter(table))]

    def save(self) -> None:
        """Write the file atomically; a cache that cannot be written is no reason to fail."""
        if self.path is None or not self.changed:
            return
        data = json.dumps({"registries": self.known}, sort_keys=True).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.path.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self.path)
        except OSError:
            return
