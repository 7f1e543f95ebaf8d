"""Outputs: one registry of output kinds, the staging folder, and publishing.

Each output kind is one row of :data:`OUTPUT_KINDS` (format → module and class),
imported only when a profile uses it. A kind's ``check`` runs in the validation
pass, before any download; its ``write`` runs once the trees are composed and
returns one :class:`OutputRecord` per file it wrote. Adding a format is one
pydantic model in the profile's ``Output`` union plus one row here. This is the
only module that knows the ``out/`` layout and names artifacts.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from composer.context import BuildContext
from composer.errors import NotSupportedError, OutputError
from composer.manifest import OutputRecord
from composer.profile.model import Compression, TarOutput

if TYPE_CHECKING:
    from composer.build.compose import ComposedArch

# format → (module, class); the module is imported on first use.
OUTPUT_KINDS: dict[str, tuple[str, str]] = {
    "tar": ("composer.build.outputs", "TarKind"),
    "oci": ("composer.build.image_outputs", "OciLayoutKind"),
    "oci-archive": ("composer.build.image_outputs", "OciArchiveKind"),
    "docker-archive": ("composer.build.image_outputs", "DockerArchiveKind"),
}
# Formats the profile accepts but this version cannot write yet, and what they need.
NOT_YET: dict[str, str] = {"iso": "the bootable ISO writer"}


@dataclass(frozen=True)
class OutputJob:
    """Everything a kind's ``write`` needs: where to write, the trees and the timestamp."""

    ctx: BuildContext
    stage: Path
    arches: tuple[ComposedArch, ...]
    epoch: int


class OutputKind(Protocol):
    """One output format: checked before any download, written after composing."""

    def check(self, ctx: BuildContext, output: Any) -> None:
        """Raise ProfileError/NotSupportedError/OutputError for what cannot be written."""

    def claim(self, ctx: BuildContext, output: Any) -> str:
        """What the output occupies in the folder; two outputs may not claim the same."""

    def write(self, job: OutputJob, output: Any) -> list[OutputRecord]:
        """Write into ``job.stage``; one record per file written."""


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


def artifact_name(ctx: BuildContext, release: str, arch: str | None, suffix: str) -> str:
    """``<name>-<release>[-<arch>]<suffix>``: every artifact file is named this way."""
    return f"{ctx.profile.name}-{release}" + (f"-{arch}" if arch else "") + suffix


@contextmanager
def progress_bar(ctx: BuildContext, total: int, desc: str) -> Iterator[Any]:
    """A per-entry callback that drives a tqdm bar on a terminal, and does nothing elsewhere."""
    if not ctx.progress:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="entry", desc=desc, leave=False) as bar:
        yield lambda _entry: bar.update()


class TarKind:
    """``format: tar``: one compressed rootfs tarball per architecture."""

    def check(self, ctx: BuildContext, output: TarOutput) -> None:
        return None

    def claim(self, ctx: BuildContext, output: TarOutput) -> str:
        return artifact_name(ctx, "<release>", "<arch>", ".tar" + output.compression.suffix)

    def write(self, job: OutputJob, output: TarOutput) -> list[OutputRecord]:
        from composer.writers.compress import open_compressor
        from composer.writers.stream import HashingWriter
        from composer.writers.tar import ROOTFS_STYLE, write_tar

        ctx = job.ctx
        compression = Compression(output.compression)
        records = []
        for arch in job.arches:
            name = artifact_name(ctx, arch.release, arch.arch, ".tar" + compression.suffix)
            ctx.log(f"==> writing {name}")
            with open(job.stage / name, "wb") as fh, \
                    progress_bar(ctx, len(arch.tree), name) as bar:
                hashed = HashingWriter(fh)
                with open_compressor(hashed, compression) as comp:  # type: ignore[arg-type]
                    write_tar(arch.tree, comp, mtime=job.epoch,  # type: ignore[arg-type]
                              style=ROOTFS_STYLE, on_entry=bar)
            records.append(OutputRecord(path=name, sha256=hashed.hexdigest, size=hashed.size,
                                        format="tar", arch=arch.arch))
        return records


def check_outputs(ctx: BuildContext) -> None:
    """Every output has a kind, passes its kind's check, and claims a place of its own."""
    claimed: dict[str, str] = {}
    for output in ctx.profile.outputs:
        kind = output_kind(ctx, output.format)
        kind.check(ctx, output)
        claim = kind.claim(ctx, output)
        if claim in claimed:
            if output.format == "tar":
                raise OutputError(f"{ctx.loaded.path}: outputs: two outputs would both write "
                                  f"{claim}; list each format once")
            raise OutputError(f"{ctx.loaded.path}: outputs: format {output.format!r} is listed twice")
        claimed[claim] = output.format


def write_outputs(job: OutputJob) -> list[OutputRecord]:
    """Every output of the profile, then the SBOMs, into the staging folder."""
    records: list[OutputRecord] = []
    for output in job.ctx.profile.outputs:
        records.extend(output_kind(job.ctx, output.format).write(job, output))
    if job.ctx.profile.sbom:
        from composer.build.sbom_outputs import write_sboms

        records.extend(write_sboms(job))
    return records


@contextmanager
def staging_dir(ctx: BuildContext) -> Iterator[Path]:
    """A private folder beside the final one; removed unless published."""
    try:
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {ctx.output_dir}: {exc.strerror}") from None
    stage = Path(tempfile.mkdtemp(prefix=f".{ctx.profile.name}.partial-", dir=ctx.output_dir))
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
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(stage, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
