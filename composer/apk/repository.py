"""Signed ``APKINDEX.tar.gz`` verification.

The archive is two gzip members: a signature tar (``.SIGN.RSA*.<keyname>``,
end blocks cut) and the index tar (``DESCRIPTION`` + ``APKINDEX``). The
signature covers the raw compressed bytes of the second member. Nothing of the
index is handed out before that signature has been checked.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from composer.apk.keys import TrustedKeys
from composer.apk.signing import (
    GzipMemberReader,
    read_small_tar,
    signature_entries,
    verify_signature,
)
from composer.errors import ArchiveError, VerificationError

MAX_SIGNATURE_MEMBER = 1024 * 1024
MAX_INDEX_MEMBER = 1024 * 1024 * 1024
MAX_DESCRIPTION = 160


@dataclass(frozen=True)
class VerifiedIndex:
    """The content of a signed index, after its signature was checked."""

    text: bytes
    description: str | None
    signer: str
    algorithm: str
    index_member_sha256: str


def verify_apkindex(data: bytes, keys: TrustedKeys, *, source: str) -> VerifiedIndex:
    """Check an ``APKINDEX.tar.gz`` against trusted keys and return its ``APKINDEX`` text."""
    reader = GzipMemberReader(io.BytesIO(data), source=source)
    if reader.at_end():
        raise ArchiveError(f"{source}: empty index file")
    first = reader.read_member(what="signature", max_size=MAX_SIGNATURE_MEMBER)
    first_files = read_small_tar(first.content, source=source, what="first gzip member")
    if first_files and not any(f.name.startswith(".SIGN.") for f in first_files):
        raise VerificationError(f"{source}: not signed")
    if reader.at_end():
        raise ArchiveError(f"{source}: index gzip member is missing after the signature")
    entries = signature_entries(first_files, source=source)
    index = reader.read_member(what="index", max_size=MAX_INDEX_MEMBER)
    if not reader.at_end():
        raise ArchiveError(
            f"{source}: {reader.remaining_bytes()} unexpected bytes after the index gzip member")
    check = verify_signature(entries, keys, source=source, message=index.raw)

    files = read_small_tar(index.content, source=source, what="index tar")
    text: bytes | None = None
    description: str | None = None
    for f in files:
        name = f.name.removeprefix("./")
        if name.startswith("."):
            raise ArchiveError(f"{source}: index tar holds {f.name!r}; this is a package, "
                               "not an index")
        if name == "APKINDEX":
            if text is not None:
                raise ArchiveError(f"{source}: index tar holds APKINDEX twice")
            text = f.data
        elif name == "DESCRIPTION" and text is None and len(f.data) <= MAX_DESCRIPTION:
            description = f.data.decode("utf-8", "replace").strip()
    if text is None:
        raise ArchiveError(f"{source}: index tar has no APKINDEX file")
    return VerifiedIndex(text=text, description=description, signer=check.signer,
                         algorithm=check.algorithm,
                         index_member_sha256=hashlib.sha256(index.raw).hexdigest())
