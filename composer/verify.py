"""Check published outputs against their SHA256SUMS/manifest, or against a fresh rebuild."""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from composer.context import BuildContext
from composer.errors import ComposerError, UsageError, VerificationError
from composer.hashing import hash_file
from composer.jsonsafe import JsonValue, load_json, read_regular_file
from composer.lockfile import MAX_LOCK_BYTES, LockFile, parse_lock
from composer.manifest import (
    LOCK_NAME,
    MANIFEST_NAME,
    MAX_ARTIFACTS,
    MAX_RECORD_BYTES,
    SUMS_NAME,
    parse_sha256sums,
    recorded_outputs,
)
from composer.numbers import shorten
from composer.provenance import PROVENANCE_NAME, STATEMENT_TYPE
from composer.urls import is_url

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class VerifyReport:
    folder: Path
    checked: tuple[str, ...]


def _read_record(path: Path, missing: str) -> bytes:
    try:
        return read_regular_file(path, what=str(path), max_bytes=MAX_RECORD_BYTES,
                                 error=VerificationError)
    except FileNotFoundError:
        raise VerificationError(f"{path}: {missing}") from None


def _read_manifest(folder: Path) -> JsonValue:
    path = folder / MANIFEST_NAME
    data = _read_record(path, "missing; not an alpine-composer output folder")
    return load_json(data, what=str(path), error=VerificationError, max_bytes=MAX_RECORD_BYTES)


def _read_sums(folder: Path) -> dict[str, str]:
    path = folder / SUMS_NAME
    return parse_sha256sums(_read_record(path, f"missing beside {MANIFEST_NAME}"),
                            source=str(path))


def _recorded_outputs(manifest: JsonValue) -> dict[str, tuple[str, int]]:
    """manifest.json's outputs as path → (sha256, size), every field checked for shape."""
    recorded: dict[str, tuple[str, int]] = {}
    for output, path in recorded_outputs(manifest):
        if path in recorded:
            output.field("path").fail(f"{shorten(path)} is listed twice")
        digest = output.field("sha256")
        sha256 = digest.str(max_len=64)
        if not _SHA256.fullmatch(sha256):
            digest.fail(f"{shorten(sha256)} is not 64 lowercase hex digits")
        recorded[path] = (sha256, output.field("size").int())
    return recorded


def _damage(path: Path, actual: str, in_sums: str, in_manifest: str) -> str | None:
    """Which of the three (file, SHA256SUMS, manifest.json) disagree, or None if none do."""
    if in_sums != in_manifest:
        agrees = ("the file matches SHA256SUMS" if actual == in_sums else
                  "the file matches manifest.json" if actual == in_manifest else
                  f"the file hashes to {actual}")
        return (f"{path}: SHA256SUMS records sha256 {in_sums} but manifest.json records "
                f"{in_manifest}; {agrees}")
    if actual != in_sums:
        return (f"{path}: sha256 {actual} does not match {in_sums}, which SHA256SUMS and "
                "manifest.json both record")
    return None


def verify_outputs(target: Path) -> VerifyReport:
    """Check every file named in SHA256SUMS and manifest.json (or just ``target`` if it is a file)."""
    if not target.exists():
        raise UsageError(f"{target}: no such file or folder")
    folder = target if target.is_dir() else target.parent
    only = None if target.is_dir() else target.name
    sums_path = folder / SUMS_NAME
    if not sums_path.exists() and not (folder / MANIFEST_NAME).exists():
        raise UsageError(f"{target}: not an alpine-composer output (no {SUMS_NAME} or "
                         f"{MANIFEST_NAME} in {folder})")
    sums = _read_sums(folder)
    manifest = _read_manifest(folder)
    recorded = _recorded_outputs(manifest)
    if set(recorded) != set(sums):
        extra = sorted(set(recorded) ^ set(sums))[0]
        where = SUMS_NAME if extra in sums else MANIFEST_NAME
        raise VerificationError(f"{folder}: {shorten(extra)} is listed in {where} only; "
                                "SHA256SUMS and manifest.json must list the same artifacts")
    if only is not None and only not in sums:
        raise UsageError(f"{target}: not listed in {sums_path}")
    names = sorted(sums) if only is None else [only]
    for name in names:
        path = folder / name
        if not path.is_file():
            raise VerificationError(f"{path}: listed in SHA256SUMS but missing")
        sha256, size = recorded[name]
        problem = _damage(path, hash_file(path)[0], sums[name], sha256)
        if problem:
            raise VerificationError(problem)
        if path.stat().st_size != size:
            raise VerificationError(f"{path}: {path.stat().st_size} bytes, but manifest.json "
                                    f"records {size}")
    for layout in sorted({n.split("/", 1)[0] for n in names if "/" in n}):
        index = folder / layout / "index.json"
        if index.exists():
            from composer.verify_oci import verify_oci_layout

            verify_oci_layout(folder / layout)
    if only is None:
        recorded_lock(manifest, folder)
        check_provenance(folder, sums)
    return VerifyReport(folder=folder, checked=tuple(names))


def recorded_lock(manifest: JsonValue, folder: Path) -> LockFile | None:
    """The lock a build recorded beside its manifest (its sha256 checked against the
    manifest's record); None for builds that predate it."""
    record = manifest.optional("lock")
    path = folder / LOCK_NAME
    if record is None:
        return None
    digest = record.field("sha256")
    expected = digest.str(max_len=64)
    if not _SHA256.fullmatch(expected):
        digest.fail(f"{shorten(expected)} is not 64 lowercase hex digits")
    try:
        data = read_regular_file(path, what=str(path), max_bytes=MAX_LOCK_BYTES,
                                 error=VerificationError)
    except FileNotFoundError:
        raise VerificationError(f"{path}: missing, but manifest.json records it") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise VerificationError(f"{path}: sha256 {actual} does not match the {expected} "
                                "manifest.json records")
    return parse_lock(data, what=str(path))


def check_provenance(folder: Path, sums: dict[str, str]) -> None:
    """The in-toto statement beside the outputs names exactly what SHA256SUMS lists."""
    path = folder / PROVENANCE_NAME
    try:
        data = read_regular_file(path, what=str(path), max_bytes=MAX_RECORD_BYTES,
                                 error=VerificationError)
    except FileNotFoundError:
        return
    doc = load_json(data, what=str(path), error=VerificationError, max_bytes=MAX_RECORD_BYTES)
    if doc.field("_type").str() != STATEMENT_TYPE:
        doc.field("_type").fail(f"expected {STATEMENT_TYPE}")
    subjects: dict[str, str] = {}
    for subject in doc.field("subject").items(max_items=MAX_ARTIFACTS):
        subjects[subject.field("name").str(max_len=1024)] = \
            subject.field("digest").field("sha256").str(max_len=64)
    for name in sorted(set(subjects) | set(sums)):
        if subjects.get(name) != sums.get(name):
            raise VerificationError(f"{path}: subject {shorten(name, 200)} has sha256 "
                                    f"{subjects.get(name)}, but SHA256SUMS records "
                                    f"{sums.get(name)}")


def verify_signatures(folder: Path, keyfile: Path) -> list[tuple[str, str]]:
    """``verify --signature``: SHA256SUMS must carry a valid detached signature by a key in
    ``keyfile``; the provenance statement too when it is signed. (name, signer) pairs."""
    from composer.sign import SIGNATURE_SUFFIX, verify_detached_file

    checked = [(SUMS_NAME, verify_detached_file(folder / SUMS_NAME, keyfile))]
    if (folder / (PROVENANCE_NAME + SIGNATURE_SUFFIX)).is_file():
        checked.append((PROVENANCE_NAME, verify_detached_file(folder / PROVENANCE_NAME, keyfile)))
    return checked


RECORDED_RELEASE = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]*")
"""What manifest.json's ``releases`` may hold (``x86_64``: ``3.20.3``, ``20240923``): the
values choose paths under the mirror a rebuild fetches from."""


def rebuild_and_compare(ctx: BuildContext, *, mirror_given: bool = False) -> VerifyReport:
    """Build again into a temporary folder with the recorded release and timestamp; compare bytes.

    The rebuild fetches from the mirror recorded in manifest.json unless ``mirror_given``
    (``--mirror``) says the context's mirror was chosen for it; no output names the mirror,
    so any mirror serving the same bytes must give the same outputs.
    """
    from composer.stages.pipeline import build

    published = ctx.output_dir / ctx.profile.name
    manifest = _read_manifest(published)
    verify_outputs(published)
    releases: dict[str, str] = {}
    for arch, value in manifest.field("releases").members(max_items=64):
        release = value.str(max_len=64)
        if not RECORDED_RELEASE.fullmatch(release) or not RECORDED_RELEASE.fullmatch(arch):
            value.fail(f"{arch!r}: {release!r} is not an architecture and a release (letters, "
                       "digits, '.', '_' and '-')")
        releases[arch] = release
    epoch = manifest.field("source_date_epoch").int()
    source = manifest.field("epoch_source").str(max_len=256)
    if not mirror_given:
        ctx = _with_recorded_mirror(ctx, manifest)
    ctx = _with_recorded_lock(ctx, manifest, published)
    scratch = Path(tempfile.mkdtemp(prefix=".rebuild-", dir=ctx.output_dir))
    try:
        again = build(replace(ctx, output_dir=scratch, pinned_release=dict(releases),
                              pinned_epoch=(epoch, source)))
        old = _read_sums(published)
        new = {o.path: o.sha256 for o in again.outputs}
        problems = compare_outputs(published, again.output_dir, old, new)
        if problems:
            raise VerificationError("; ".join(problems))
        return VerifyReport(folder=published, checked=tuple(sorted(new)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _with_recorded_lock(ctx: BuildContext, manifest: JsonValue, folder: Path) -> BuildContext:
    """A rebuild installs exactly what the published build did: the lock it recorded."""
    lock = recorded_lock(manifest, folder)
    if lock is None:
        return ctx
    ctx.log(f"==> rebuilding with the lock the build recorded ({folder / LOCK_NAME})")
    return replace(ctx, lock=lock, lock_path=folder / LOCK_NAME, lock_strict=False)


def _with_recorded_mirror(ctx: BuildContext, manifest: JsonValue) -> BuildContext:
    """``ctx`` with the manifest's build mirror, set the way ``--mirror`` sets it (a profile
    override); unchanged for manifests that predate the field."""
    field = manifest.optional("mirror")
    recorded = field.str() if field is not None else None
    if field is None or recorded == ctx.profile.mirror:
        return ctx
    if recorded is None or not is_url(recorded):
        raise VerificationError(f"{manifest.what}: mirror {shorten(recorded)} is not an "
                                "http://, https:// or file:// URL")
    from composer.profile import load_profile

    ctx.log(f"==> rebuilding from the recorded mirror {recorded} (--mirror chooses another)")
    return replace(ctx, loaded=load_profile(ctx.loaded.path, overrides={"mirror": recorded}))


def compare_outputs(published: Path, rebuilt: Path, old: dict[str, str],
                    new: dict[str, str]) -> list[str]:
    """One line per differing artifact (an OCI layout counts as one), naming the packages,
    files and format fields that differ inside and which side holds which value."""
    differing = sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))
    layouts = sorted({n.split("/", 1)[0] for n in differing
                      if "/" in n and (published / n.split("/", 1)[0] / "index.json").is_file()})
    problems = [f"{published / layout}: rebuild differs: "
                + explain_difference(published / layout, rebuilt / layout) for layout in layouts]
    for name in differing:
        if "/" in name and name.split("/", 1)[0] in layouts:
            continue
        if name not in new:
            problems.append(f"rebuild did not produce {name}")
        elif name not in old:
            problems.append(f"rebuild produced {name}, which the published build lacks")
        else:
            problems.append(f"{published / name}: rebuild differs: "
                            + explain_difference(published / name, rebuilt / name))
    return problems


MAX_LISTED = 12


def explain_difference(published: Path, rebuilt: Path) -> str:
    """What the diff engine finds between a published artifact and its rebuild, at most
    :data:`MAX_LISTED` changes (packages, then files, then format fields)."""
    from composer.diff import diff_paths

    try:
        report = diff_paths(published, rebuilt, labels=("published", "rebuild"))
    except ComposerError as exc:
        return f"cannot compare them ({exc.message})"
    ordered = [c for level in ("package", "file", "format") for c in report.at(level)]
    shown = [c.describe(report.labels) for c in ordered[:MAX_LISTED]]
    left = sum(report.count(level) for level in ("package", "file", "format")) - len(shown)
    if left > 0:
        shown.append(f"… and {left} more")
    return "; ".join(shown) if shown else "the bytes differ"
