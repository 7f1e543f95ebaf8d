"""Outputs: one registry of output kinds, the staging folder, and publishing.

Each output kind is one row of :data:`OUTPUT_KINDS` (format → module and class),
imported only when a profile uses it. A kind's ``check`` runs in the validation
pass, before any download; its ``write`` runs once the trees are composed and
returns one :class:`OutputRecord` per file it wrote. Adding a format is one
pydantic model in the profile's ``Output`` union plus one row here (and one kind
class in a module of its own, built on :mod:`composer.stages.kind`). This module and
``kind`` are the only ones that know the ``out/`` layout and name artifacts.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from composer.context import BuildContext
from composer.errors import NotSupportedError, OutputError, ProfileError
from composer.leftovers import pid_tag, sweep_dead
from composer.manifest import MANIFEST_NAME, OutputRecord
from composer.stages.kind import OutputJob, OutputKind

# format → (module, class); the module is imported on first use.
OUTPUT_KINDS: dict[str, tuple[str, str]] = {
    "tar": ("composer.stages.tar_output", "TarKind"),
    "oci": ("composer.stages.image_outputs", "OciLayoutKind"),
    "oci-archive": ("composer.stages.image_outputs", "OciArchiveKind"),
    "docker-archive": ("composer.stages.image_outputs", "DockerArchiveKind"),
    "iso": ("composer.stages.iso_output", "IsoKind"),
    "disk": ("composer.stages.disk_output", "DiskKind"),
}
# Formats the profile accepts but this version cannot write yet, and what they need.
NOT_YET: dict[str, str] = {}


def output_kind(ctx: BuildContext, fmt: str) -> OutputKind:
    """The registered kind for ``fmt``; NotSupportedError for a format not written yet."""
    row = OUTPUT_KINDS.get(fmt)
    if row is None:
        needs = NOT_YET.get(fmt, f"a writer for {fmt!r}")
        raise NotSupportedError(
            f"{ctx.loaded.path}: outputs: format {fmt!r} (variant {ctx.profile.variant}) needs "
            f"{needs}, which this version of alpine-composer does not have yet")
    module, name = row
    kind: OutputKind = getattr(importlib.import_module(module), name)()
    return kind


def check_outputs(ctx: BuildContext) -> None:
    """Every output has a kind, passes its kind's check, and claims a place of its own."""
    claimed: dict[str, str] = {}
    for output in ctx.profile.outputs:
        kind = output_kind(ctx, output.format)
        kind.check(ctx, output)
        claim = kind.claim(ctx, output)
        if claim in claimed:
            if output.format == "tar":
                raise ProfileError(f"{ctx.loaded.path}: outputs: two outputs would both write "
                                   f"{claim}; list each format once")
            raise ProfileError(f"{ctx.loaded.path}: outputs: format {output.format!r} is listed "
                               "twice")
        claimed[claim] = output.format


def write_outputs(job: OutputJob) -> list[OutputRecord]:
    """Every output of the profile, then the SBOMs, into the staging folder."""
    records: list[OutputRecord] = []
    for output in job.ctx.profile.outputs:
        records.extend(output_kind(job.ctx, output.format).write(job, output))
    if job.ctx.profile.sbom:
        from composer.stages.sbom_outputs import write_sboms

        records.extend(write_sboms(job))
    return records


@contextmanager
def output_errors(folder: Path) -> Iterator[None]:
    """An OS error while writing outputs (read-only, disk full) as one line naming the file."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or folder
        raise OutputError(f"output folder {folder}: cannot write {where}: "
                          f"{exc.strerror or exc}") from exc


def check_output_place(ctx: BuildContext) -> None:
    """Before any download: ``<output-dir>/<name>`` is absent or a previous build's folder
    (never a user's file or folder to be swapped away), and leftovers of builds that died
    there are swept."""
    final = final_dir(ctx)
    if final.is_symlink() or (final.exists() and not (final / MANIFEST_NAME).is_file()):
        raise OutputError(f"{final}: exists and is not an alpine-composer output folder (no "
                          f"{MANIFEST_NAME}); refusing to replace it (move it, or choose another "
                          "--output-dir)")
    if ctx.output_dir.is_dir():
        for prefix in (f".{ctx.profile.name}.partial-", f".{ctx.profile.name}.old-"):
            sweep_dead(ctx.output_dir, prefix)


@contextmanager
def staging_dir(ctx: BuildContext) -> Iterator[Path]:
    """A private folder beside the final one (named with this process's id, so that a later
    build can sweep it if this one is killed); removed unless published."""
    try:
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{ctx.profile.name}.partial-{pid_tag()}",
                                      dir=ctx.output_dir))
    except OSError as exc:
        raise OutputError(f"output folder {ctx.output_dir}: cannot create "
                          f"{exc.filename or ctx.output_dir}: {exc.strerror or exc}") from None
    try:
        yield stage
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def final_dir(ctx: BuildContext) -> Path:
    """``<output-dir>/<name>/``, where a build is published."""
    return ctx.output_dir / ctx.profile.name


def publish(stage: Path, final: Path) -> None:
    """Swap the staged folder into place: readers see the old or the new set, never a mix."""
    os.chmod(stage, 0o755)
    old: Path | None = None
    if final.exists():
        if not (final / MANIFEST_NAME).is_file():
            raise OutputError(f"{final}: exists and is not an alpine-composer output folder; "
                              "refusing to replace it")
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-{pid_tag()}", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(stage, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
