"""Parsing of Alpine's ``latest-releases.yaml`` and ``.sha256`` files (pure).

The mirror's YAML is read with the bounded loader in text mode, so every
scalar stays a string: ``version: 3.20`` must not turn into the float 3.2.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from composer.errors import ArchiveError, NotFoundError, VerificationError
from composer.numbers import MAX_DIGITS, clip, parse_decimal, shorten
from composer.profile.yamlsafe import load_yaml

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_HEX128 = re.compile(r"[0-9a-fA-F]{128}")
_VERSION = re.compile(r"[0-9A-Za-z._+~-]{1,64}")
"""Release versions are short: ``3.20.3``, ``20240923`` (edge), ``3.21.0_rc1``."""
MAX_RELEASES_BYTES = 1 << 20
"""A real latest-releases.yaml is a few KB (one entry of about 700 bytes per image)."""
MAX_RELEASES_VALUES = 10_000


@dataclass(frozen=True)
class ReleaseImage:
    """One image listed in ``latest-releases.yaml``."""

    branch: str
    arch: str
    version: str
    flavor: str
    file: str
    size: int | None
    sha256: str | None
    sha512: str | None
    date: str | None


def parse_latest_releases(data: bytes, *, source: str) -> list[ReleaseImage]:
    """Every usable image entry; entries without flavor/file/version (e.g. Netboot) are skipped."""
    if len(data) > MAX_RELEASES_BYTES:
        raise ArchiveError(f"latest-releases.yaml at {source}: {len(data)} bytes, more than the "
                           f"{MAX_RELEASES_BYTES} allowed")
    document = load_yaml(data, source=f"latest-releases.yaml at {source}", typed=False,
                         error_cls=ArchiveError, max_nodes=MAX_RELEASES_VALUES)
    if document is None:
        return []
    if not isinstance(document, list):
        raise ArchiveError(
            f"latest-releases.yaml at {source}: expected a list of images, "
            f"got {type(document).__name__}"
        )
    images: list[ReleaseImage] = []
    for index, entry in enumerate(document):
        if not isinstance(entry, dict):
            continue
        image = _parse_entry(entry, index=index, source=source)
        if image is not None:
            images.append(image)
    return images


def _parse_entry(entry: dict[str, Any], *, index: int, source: str) -> ReleaseImage | None:
    def text(key: str) -> str | None:
        value = entry.get(key)
        return value.strip() if isinstance(value, str) and value.strip() else None

    flavor, version = text("flavor"), text("version")
    file = text("file") or text("iso")
    if flavor is None or version is None or file is None:
        return None
    where = f"latest-releases.yaml at {source}: entry {index} ({clip(file)})"
    if "/" in file or file in (".", "..") or len(file) > 255:
        raise ArchiveError(f"{where}: file name must not contain a path")
    if not _VERSION.fullmatch(version):
        raise ArchiveError(f"{where}: version {shorten(version)} is not a release version")
    size_text = text("size")
    size: int | None = None
    if size_text is not None:
        size = parse_decimal(size_text)
        if size is None:
            raise ArchiveError(f"{where}: size {shorten(size_text)} is not a number")
    sha256 = text("sha256")
    if sha256 is not None and not _HEX64.fullmatch(sha256):
        raise ArchiveError(f"{where}: sha256 {shorten(sha256)} is not 64 hex digits")
    sha512 = text("sha512")
    if sha512 is not None and not _HEX128.fullmatch(sha512):
        raise ArchiveError(f"{where}: sha512 {shorten(sha512)} is not 128 hex digits")
    return ReleaseImage(
        branch=text("branch") or "",
        arch=text("arch") or "",
        version=version,
        flavor=flavor,
        file=file,
        size=size,
        sha256=sha256.lower() if sha256 else None,
        sha512=sha512.lower() if sha512 else None,
        date=text("date"),
    )


def _version_key(version: str) -> tuple[tuple[int, str], ...]:
    """Order release versions numerically part by part (3.20.10 > 3.20.9)."""
    return tuple(
        (number, "") if (number := parse_decimal(part, max_digits=MAX_DIGITS)) is not None
        else (-1, part)
        for part in re.split(r"[._-]", version)
    )


def select_release(
    images: Iterable[ReleaseImage],
    *,
    flavor: str,
    arch: str,
    version: str | None,
    source: str = "latest-releases.yaml",
) -> ReleaseImage:
    """The image of ``flavor``/``arch``: the pinned ``version``, else the newest listed."""
    candidates = [i for i in images if i.flavor == flavor and (i.arch == arch or not i.arch)]
    if not candidates:
        raise NotFoundError(f"latest-releases.yaml at {source} has no {flavor} entry for {arch}")
    if version is not None:
        pinned = [i for i in candidates if i.version == version]
        if not pinned:
            listed = ", ".join(sorted({i.version for i in candidates}, key=_version_key))
            raise NotFoundError(
                f"latest-releases.yaml at {source} has no {flavor} {version} for {arch} "
                f"(lists {listed})"
            )
        return pinned[0]
    return max(candidates, key=lambda i: _version_key(i.version))


def parse_checksum_file(data: bytes, *, filename: str, source: str) -> str:
    """The lowercase sha256 hex for ``filename`` in ``sha256sum`` output.

    Only the hex field is trusted; a path prefix on the name is ignored. A
    file with a single bare digest (no name) is accepted as well.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VerificationError(f"checksum file {source}: not UTF-8 text") from exc
    found: list[str] = []
    names: list[str] = []
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        fields = line.split(None, 1)
        digest = fields[0]
        if not _HEX64.fullmatch(digest):
            raise VerificationError(
                f"checksum file {source}: line {line[:80]!r} does not start with a sha256 digest"
            )
        if len(fields) == 1:
            if len(lines) == 1:
                return digest.lower()
            continue
        name = fields[1].strip().lstrip("*")
        names.append(name)
        if name.rsplit("/", 1)[-1] == filename:
            found.append(digest.lower())
    if not found:
        listed = ", ".join(names) if names else "nothing"
        raise VerificationError(f"checksum file {source} has no entry for {filename} (lists {listed})")
    if len(set(found)) > 1:
        raise VerificationError(f"checksum file {source} lists {filename} with different digests")
    return found[0]


def release_file_name(*, flavor: str, version: str, arch: str, ext: str = "tar.gz") -> str:
    """``alpine-minirootfs-3.20.3-x86_64.tar.gz`` from its parts."""
    return f"{flavor}-{version}-{arch}.{ext}"

