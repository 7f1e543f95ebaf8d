"""The build manifest: every input and output with its sha256, as canonical JSON.

Canonical means sorted keys, two-space indentation and a trailing newline, so
the same build always writes the same manifest bytes and diffs stay readable.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from composer.errors import VerificationError
from composer.numbers import shorten

MANIFEST_NAME = "manifest.json"
SUMS_NAME = "SHA256SUMS"
LOCK_NAME = "lock.json"
"""The plan the build followed, as a lock (beside manifest.json): ``verify --rebuild`` uses it."""
MANIFEST_SCHEMA = 1


class InputRole(enum.StrEnum):
    """What an input is to the build; its caller says so when it fetches it. The values
    are the manifest's ``kind`` strings."""

    RELEASE_KEY = "release-key"
    MINIROOTFS = "minirootfs"
    SIGNATURE = "signature"
    METADATA = "metadata"  # latest-releases.yaml, .sha256 files, repository key files
    INDEX = "apkindex"
    PACKAGE = "package"
    OVERLAY = "overlay"


@dataclass(frozen=True)
class InputRecord:
    """One thing the build read: a download, a key, an overlay file."""

    kind: str
    name: str
    sha256: str
    size: int
    url: str | None = None
    arch: str | None = None
    signed_by: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class OutputRecord:
    """One file the build wrote, relative to the image's output folder."""

    path: str
    sha256: str
    size: int
    format: str
    arch: str | None = None
    digest: str | None = None


@dataclass(frozen=True)
class BuildManifest:
    """What one build read and wrote. ``mirror`` is where the inputs were fetched from (the
    profile's or ``--mirror``); no output names it, so ``verify --rebuild`` may use another."""

    tool_version: str
    profile_name: str
    profile_digest: str
    variant: str
    branch: str
    mirror: str
    releases: Mapping[str, str]
    source_date_epoch: int
    epoch_source: str
    inputs: tuple[InputRecord, ...]
    outputs: tuple[OutputRecord, ...]
    packages: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    scripts_not_run: tuple[Mapping[str, Any], ...] = ()
    notes: tuple[str, ...] = ()
    compressors: tuple[Mapping[str, str], ...] = ()
    """The pinned library behind each compression the outputs use (format, name, version,
    package): what, besides the inputs, shapes the output bytes."""
    lock: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": MANIFEST_SCHEMA,
            "tool": {"name": "alpine-composer", "version": self.tool_version},
            "profile": {"name": self.profile_name, "digest": "sha256:" + self.profile_digest,
                        "variant": self.variant, "branch": self.branch},
            "mirror": self.mirror,
            "releases": dict(self.releases),
            "source_date_epoch": self.source_date_epoch,
            "epoch_source": self.epoch_source,
            "inputs": [_compact(asdict(i)) for i in sorted(
                self.inputs, key=lambda i: (i.kind, i.arch or "", i.name, i.sha256))],
            "outputs": [_compact(asdict(o)) for o in sorted(self.outputs, key=lambda o: o.path)],
            "packages": {k: list(v) for k, v in self.packages.items()},
            "scripts_not_run": [dict(s) for s in self.scripts_not_run],
            "notes": list(self.notes),
            "compressors": [dict(c) for c in self.compressors],
            **({"lock": dict(self.lock)} if self.lock is not None else {}),
        }

    def to_json(self) -> bytes:
        return dump_canonical_json(self.to_dict())


def _compact(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if v is not None}


def dump_canonical_json(value: Any) -> bytes:
    return (json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def format_sha256sums(outputs: Iterable[OutputRecord]) -> bytes:
    """``sha256sum`` format (two spaces), sorted by path, so ``sha256sum -c`` passes."""
    lines = [f"{o.sha256}  {o.path}\n" for o in sorted(outputs, key=lambda o: o.path)]
    return "".join(lines).encode("utf-8")


MAX_RECORD_BYTES = 16 << 20
"""The largest ``manifest.json`` or ``SHA256SUMS`` anyone else's output folder may hold."""
MAX_ARTIFACTS = 100_000
"""Artifacts one output folder may list (an OCI layout lists each blob)."""
MAX_PATH_CHARS = 1024
MAX_NAME_BYTES = 255
MAX_PATH_PARTS = 8
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def artifact_path_problem(path: str) -> str | None:
    """Why ``path`` cannot name a file inside an output folder, or None when it can.

    Checked before the name reaches the filesystem: a component longer than a file
    system allows, ``..``, an absolute path or a control character is refused here,
    not met as an OSError or a file outside the folder."""
    if not path:
        return "empty file name"
    if len(path) > MAX_PATH_CHARS:
        return f"file name of {len(path)} characters (at most {MAX_PATH_CHARS})"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
        return f"file name {shorten(path)} holds a control character"
    if path.startswith("/"):
        return f"file name {shorten(path)} is absolute"
    parts = path.split("/")
    if len(parts) > MAX_PATH_PARTS:
        return f"file name {shorten(path)} has more than {MAX_PATH_PARTS} parts"
    for part in parts:
        if part in ("", ".", ".."):
            return f"file name {shorten(path)} has an empty, '.' or '..' part"
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            return (f"file name {shorten(path)} has a part longer than {MAX_NAME_BYTES} "
                    "bytes")
    return None


def parse_sha256sums(data: bytes, *, source: str) -> dict[str, str]:
    """``sha256sum`` output (``<hex>  <name>`` or ``<hex> *<name>``) as name → lowercase hex;
    anything else, a duplicate or an unsafe name is a VerificationError naming the line."""
    if len(data) > MAX_RECORD_BYTES:
        raise VerificationError(f"{source}: {len(data)} bytes, more than the {MAX_RECORD_BYTES} "
                                "allowed")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VerificationError(f"{source}: not UTF-8 at byte {exc.start}") from None
    sums: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        digest, sep, path = line[:64], line[64:66], line[66:]
        if sep not in ("  ", " *") or not _HEX64.fullmatch(digest):
            raise VerificationError(f"{source}: line {number} is not in sha256sum format")
        problem = artifact_path_problem(path)
        if problem is not None:
            raise VerificationError(f"{source}: line {number}: {problem}")
        if path in sums:
            raise VerificationError(f"{source}: line {number}: {shorten(path)} is listed twice")
        if len(sums) >= MAX_ARTIFACTS:
            raise VerificationError(f"{source}: more than {MAX_ARTIFACTS} entries")
        sums[path] = digest.lower()
    return sums
