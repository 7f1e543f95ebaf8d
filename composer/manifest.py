"""The build manifest: every input and output with its sha256, as canonical JSON.

Canonical means sorted keys, two-space indentation and a trailing newline, so
the same build always writes the same manifest bytes and diffs stay readable.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

MANIFEST_NAME = "manifest.json"
SUMS_NAME = "SHA256SUMS"
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


def parse_sha256sums(data: bytes, *, source: str) -> dict[str, str]:
    from composer.errors import VerificationError

    sums: dict[str, str] = {}
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, path = line.partition("  ")
        if not sep or len(digest) != 64:
            raise VerificationError(f"{source}: line {number} is not in sha256sum format")
        sums[path.lstrip("*")] = digest.lower()
    return sums
