"""manifest.json rendered as an in-toto Statement with a SLSA provenance v1 predicate.

Subjects are the build's outputs (every file SHA256SUMS lists); the materials
(``resolvedDependencies``) are the locked inputs with their digests: the release key, the
minirootfs and its signature, every repository index and package, the package signing keys
the profile adds, and the overlay's host files. Inputs are named by where the image's own
mirror (``image_mirror``) serves them, never by the build mirror, and nothing here reads a
clock, so the statement is as reproducible as the outputs it describes.

Pure: values in, canonical JSON bytes out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from composer.lockfile import LockFile, package_path
from composer.manifest import OutputRecord
from composer.urls import is_url, mirror_file

PROVENANCE_NAME = "provenance.intoto.json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://alpine-composer.invalid/buildtypes/profile/v1"
BUILDER_ID = "https://alpine-composer.invalid/builders/local"


def _material(name: str, sha256: str, kind: str, uri: str | None = None,
              **annotations: str) -> dict[str, Any]:
    item: dict[str, Any] = {"name": name, "digest": {"sha256": sha256},
                            "annotations": {"kind": kind, **annotations}}
    if uri is not None:
        item["uri"] = uri
    return item


def materials(lock: LockFile, image_mirror: str) -> list[dict[str, Any]]:
    """Every locked input as an in-toto ResourceDescriptor, in a fixed order."""
    found: list[dict[str, Any]] = []

    def where(path: str) -> str:
        return mirror_file(image_mirror, path)

    key = lock.release_key
    if key is not None:
        source = key.source or key.name
        found.append(_material(source, key.sha256, "release-key",
                               source if is_url(source) else None,
                               fingerprint=key.fingerprint or ""))
    for arch in lock.arches:
        mini = arch.minirootfs
        if mini is not None:
            found.append(_material(mini.path, mini.sha256, "minirootfs", where(mini.path),
                                   arch=arch.arch, release=mini.release))
            if mini.signature is not None:
                found.append(_material(mini.signature.path, mini.signature.sha256, "signature",
                                       where(mini.signature.path), arch=arch.arch))
        for k in arch.keys:
            if k.source is not None:
                found.append(_material(k.source, k.sha256, "package-key",
                                       k.source if is_url(k.source) else None, arch=arch.arch))
        for repo in arch.repositories:
            found.append(_material(repo.path, repo.sha256, "apkindex", where(repo.path),
                                   arch=arch.arch, signer=repo.signer))
        for package in arch.packages:
            if package.sha256 is None or package.repository is None:
                continue
            path = package_path(arch.arch, package)
            found.append(_material(path, package.sha256, "package", where(path), arch=arch.arch,
                                   checksum=package.checksum))
    for path, value in lock.profile.files.items():
        found.append(_material(path, value.split()[0].removeprefix("sha256:"), "overlay"))
    unique: dict[tuple[str, str], dict[str, Any]] = {}
    for item in found:
        unique.setdefault((item["name"], item["digest"]["sha256"]), item)
    return list(unique.values())


def provenance_statement(*, outputs: Sequence[OutputRecord], lock: LockFile, lock_sha256: str,
                         image_mirror: str, tool_version: str, profile_file: str,
                         releases: Mapping[str, str]) -> bytes:
    """The statement as canonical JSON (sorted keys, two-space indent, trailing newline)."""
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": o.path, "digest": {"sha256": o.sha256}}
                    for o in sorted(outputs, key=lambda o: o.path)],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "profile": {"file": profile_file, "name": lock.profile.name,
                                "digest": {"sha256": lock.profile.digest}},
                    "branch": lock.branch,
                    "releases": dict(releases),
                    "source_date_epoch": lock.source_date_epoch,
                },
                "internalParameters": {"lock": {"digest": {"sha256": lock_sha256}},
                                       "epoch_source": lock.epoch_source},
                "resolvedDependencies": materials(lock, image_mirror),
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": {"alpine-composer": tool_version}},
                "metadata": {},
            },
        },
    }
    return (json.dumps(statement, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()
