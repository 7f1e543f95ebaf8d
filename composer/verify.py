"""Check published outputs against their SHA256SUMS/manifest, or against a fresh rebuild."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from composer.context import BuildContext
from composer.diff import first_difference
from composer.errors import UsageError, VerificationError
from composer.hashing import hash_file
from composer.manifest import MANIFEST_NAME, SUMS_NAME, parse_sha256sums


@dataclass(frozen=True)
class VerifyReport:
    folder: Path
    checked: tuple[str, ...]


def _read_manifest(folder: Path) -> dict[str, object]:
    path = folder / MANIFEST_NAME
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise VerificationError(f"{path}: missing; not an alpine-composer output folder") from None
    except (OSError, ValueError) as exc:
        raise VerificationError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise VerificationError(f"{path}: not a manifest object")
    return data


def verify_outputs(target: Path) -> VerifyReport:
    """Check every file named in SHA256SUMS and manifest.json (or just ``target`` if it is a file)."""
    if not target.exists():
        raise UsageError(f"{target}: no such file or folder")
    folder = target if target.is_dir() else target.parent
    only = None if target.is_dir() else target.name
    sums_path = folder / SUMS_NAME
    try:
        sums = parse_sha256sums(sums_path.read_bytes(), source=str(sums_path))
    except FileNotFoundError:
        raise VerificationError(f"{sums_path}: missing; not an alpine-composer output folder") from None
    manifest = _read_manifest(folder)
    outputs = manifest.get("outputs", [])
    if not isinstance(outputs, list):
        raise VerificationError(f"{folder / MANIFEST_NAME}: 'outputs' is not a list")
    recorded = {o["path"]: o for o in outputs if isinstance(o, dict)}
    if set(recorded) != set(sums):
        extra = sorted(set(recorded) ^ set(sums))
        raise VerificationError(f"{folder}: SHA256SUMS and manifest.json disagree about {extra[0]}")
    names = sorted(sums) if only is None else [only]
    if only is not None and only not in sums:
        raise VerificationError(f"{target}: not listed in {sums_path}")
    for name in names:
        path = folder / name
        if not path.is_file():
            raise VerificationError(f"{path}: listed in SHA256SUMS but missing")
        actual, _ = hash_file(path)
        if actual != sums[name] or actual != recorded[name]["sha256"]:
            raise VerificationError(
                f"{path}: sha256 {actual} does not match the recorded {sums[name]}")
        if path.stat().st_size != recorded[name]["size"]:
            raise VerificationError(f"{path}: size differs from manifest.json")
    for layout in sorted({n.split("/", 1)[0] for n in names if "/" in n}):
        index = folder / layout / "index.json"
        if index.exists():
            from composer.verify_oci import verify_oci_layout

            verify_oci_layout(folder / layout)
    return VerifyReport(folder=folder, checked=tuple(names))


def rebuild_and_compare(ctx: BuildContext) -> VerifyReport:
    """Build again into a temporary folder with the recorded release and timestamp; compare bytes."""
    from composer.build.pipeline import build

    published = ctx.output_dir / ctx.profile.name
    manifest = _read_manifest(published)
    verify_outputs(published)
    releases = manifest.get("releases")
    epoch = manifest.get("source_date_epoch")
    source = manifest.get("epoch_source")
    if not isinstance(releases, dict) or not isinstance(epoch, int) or not isinstance(source, str):
        raise VerificationError(f"{published / MANIFEST_NAME}: lacks releases or source_date_epoch")
    scratch = Path(tempfile.mkdtemp(prefix=".rebuild-", dir=ctx.output_dir))
    try:
        again = build(replace(ctx, output_dir=scratch, pinned_release=dict(releases),
                              pinned_epoch=(epoch, source)))
        old = parse_sha256sums((published / SUMS_NAME).read_bytes(), source=str(published))
        new = {o.path: o.sha256 for o in again.outputs}
        for name in sorted(set(old) | set(new)):
            if name not in new:
                raise VerificationError(f"rebuild did not produce {name}")
            if name not in old:
                raise VerificationError(f"rebuild produced {name}, which the published build lacks")
            if old[name] != new[name]:
                why = first_difference(published / name, again.output_dir / name)
                raise VerificationError(f"{published / name}: rebuild differs: {why}")
        return VerifyReport(folder=published, checked=tuple(sorted(new)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
