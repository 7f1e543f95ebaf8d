"""What every output kind shares: the job it is given, its protocol, artifact names.

A kind module (``tar_output``, ``image_outputs`` …) imports only this; the registry in
:mod:`composer.stages.outputs` imports the kinds, so nothing loops back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from composer.context import BuildContext
from composer.manifest import OutputRecord
from composer.urls import rebase_url

if TYPE_CHECKING:
    from composer.stages.compose import ComposedArch


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


def output_where(ctx: BuildContext, output: object) -> str:
    """``<profile>: outputs[<index>]``, where messages about one output point."""
    index = next(i for i, o in enumerate(ctx.profile.outputs) if o is output)
    return f"{ctx.loaded.path}: outputs[{index}]"


def artifact_name(ctx: BuildContext, release: str, arch: str | None, suffix: str) -> str:
    """``<name>-<release>[-<arch>]<suffix>``: every artifact file is named this way."""
    return f"{ctx.profile.name}-{release}" + (f"-{arch}" if arch else "") + suffix


def base_url(ctx: BuildContext, build: ComposedArch) -> str | None:
    """The minirootfs's URL as outputs name it: under ``image_mirror``, never the build
    mirror (None for ``base: packages``)."""
    if build.minirootfs is None:
        return None
    profile = ctx.profile
    return rebase_url(build.minirootfs.url, profile.mirror, profile.image_mirror)


@contextmanager
def progress_bar(ctx: BuildContext, total: int, desc: str) -> Iterator[Any]:
    """A per-entry callback that drives a tqdm bar on a terminal, and does nothing elsewhere."""
    if not ctx.progress:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="entry", desc=desc, leave=False) as bar:
        yield lambda _entry: bar.update()
