"""Load the real Alpine APKINDEX files from ../shared for the index and resolver tests.

Signature checks are not repeated here (tests/apk/test_signing.py covers them);
the tar is opened directly to get the APKINDEX and DESCRIPTION members.
"""

from __future__ import annotations

import functools
import tarfile
from pathlib import Path

import pytest

from composer.apk.index import ApkIndex, parse_apkindex

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "alpine-real"

# File (relative to FIXTURES) -> package count and DESCRIPTION, from SOURCES.md.
REAL_INDEXES: dict[str, tuple[int, str]] = {
    "apkindex/APKINDEX-v3.19-main-x86_64-v3.19.1-643.tar.gz": (5443, "v3.19.1-643-gec825d20535"),
    "apkindex/APKINDEX-v3.16-main-x86_64-v3.16.3-13.tar.gz": (4929, "v3.16.3-13-g4d933a1fa3"),
    "apkindex/APKINDEX-v3.17-main-aarch64-v3.17.3-216.tar.gz": (5004, "v3.17.3-216-g54a39ace82a"),
    "iso-3.19.1-x86_64/apks/x86_64/APKINDEX.tar.gz": (100, "3.19.1"),
    "apkindex/APKINDEX-v3.19-community-x86_64-v3.19.1-642.tar.gz": (
        17587, "v3.19.1-642-g9e5b575ce97"),
}
V319_MAIN = "apkindex/APKINDEX-v3.19-main-x86_64-v3.19.1-643.tar.gz"
V319_COMMUNITY = "apkindex/APKINDEX-v3.19-community-x86_64-v3.19.1-642.tar.gz"
ISO_3191 = "iso-3.19.1-x86_64/apks/x86_64/APKINDEX.tar.gz"


def members(relative: str) -> tuple[bytes, str]:
    """The raw APKINDEX bytes and the DESCRIPTION text of a real index (skip if absent)."""
    path = FIXTURES / relative
    if not path.is_file():
        pytest.skip(f"real Alpine index not found at {path} (../shared is absent)")
    with tarfile.open(path, "r:gz") as archive:
        index = archive.extractfile("APKINDEX")
        description = archive.extractfile("DESCRIPTION")
        assert index is not None and description is not None
        return index.read(), description.read().decode()


@functools.cache
def _load(relative: str) -> ApkIndex:
    text, description = members(relative)
    return parse_apkindex(text, source=relative, description=description, repository=relative)


def load(relative: str) -> ApkIndex:
    """The parsed real index (parsed once per test session)."""
    if not (FIXTURES / relative).is_file():
        pytest.skip(f"real Alpine index not found at {FIXTURES / relative} (../shared is absent)")
    return _load(relative)
