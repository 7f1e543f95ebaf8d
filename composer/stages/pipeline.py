"""``build(ctx)`` and ``fetch(ctx)``: the stages in data-flow order, as flat lists of steps.

validate → plan → compose → epoch → outputs → manifest → publish. Stages a
profile may not need (the APK engine, the image writers, OpenPGP, progress bars)
are imported where first used, so a small build does not pay their start-up.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from composer.context import BuildContext
from composer.manifest import (
    MANIFEST_NAME,
    SUMS_NAME,
    BuildManifest,
    InputRecord,
    OutputRecord,
    format_sha256sums,
)
from composer.profile.model import Base
from composer.sources.cache import ContentCache
from composer.sources.fetch import Fetcher, FetchSettings
from composer.stages.base import ReleaseKeySource, fetch_base, load_base_tree, newest_mtime, read_base
from composer.stages.compose import ComposedArch, compose_arch
from composer.stages.epoch import choose_epoch
from composer.stages.kind import OutputJob
from composer.stages.outputs import (
    check_output_place,
    final_dir,
    output_errors,
    publish,
    staging_dir,
    write_outputs,
)
from composer.stages.plan import (
    ArchPlan,
    BuildPlan,
    plan_arch,
    requested_packages,
    wanted_packages,
)
from composer.stages.record import build_manifest, input_records, overlay_inputs
from composer.stages.validate import validate
from composer.tree import FileTree


@dataclass(frozen=True)
class BuildResult:
    """A published build: its manifest, folder and output records."""

    manifest: BuildManifest
    output_dir: Path
    outputs: tuple[OutputRecord, ...]


def open_fetcher(ctx: BuildContext) -> Fetcher:
    settings = FetchSettings(offline=ctx.offline, progress=ctx.progress, retries=ctx.retries,
                             backoff=ctx.retry_delay, connect_timeout=ctx.timeout,
                             read_timeout=ctx.timeout, log=ctx.log)
    return Fetcher(settings, ContentCache(ctx.cache_dir))


@contextmanager
def planned(ctx: BuildContext, fetcher: Fetcher) -> Iterator[tuple[BuildPlan, dict[str, FileTree]]]:
    """Fetch and verify the base of every architecture and plan it; yields the plan and
    the loaded base trees (closed on exit unless a later stage took them over)."""
    keys = ReleaseKeySource(ctx, fetcher)
    if ctx.profile.base == Base.MINIROOTFS and not ctx.profile.trust.allow_unsigned:
        keys()  # the pinned key first: a wrong fingerprint stops the build before anything else
    with ExitStack() as trees:
        bases: dict[str, FileTree] = {}
        arches: list[ArchPlan] = []
        for arch in (a.value for a in ctx.profile.arch):
            mini = fetch_base(ctx, fetcher, keys, arch)
            tree = load_base_tree(mini)
            trees.callback(tree.close)
            bases[arch] = tree
            facts = read_base(tree, trust_tree_keys=ctx.profile.base == Base.MINIROOTFS) \
                if requested_packages(ctx, arch) else None
            arches.append(plan_arch(ctx, fetcher, arch, mini, facts))
        yield BuildPlan(release_key=keys.key, arches=tuple(arches)), bases


def fetch(ctx: BuildContext) -> list[InputRecord]:
    """Download and verify every input the plan names; compose nothing (the ``fetch`` command)."""
    validate(ctx)
    fetcher = open_fetcher(ctx)
    with planned(ctx, fetcher) as (plan, _bases):
        if any(a.packages for a in plan.arches):
            from composer.stages.packages import download_packages

            download_packages(fetcher, wanted_packages(plan))
    return list(input_records(ctx, fetcher.inputs, plan))


def build(ctx: BuildContext) -> BuildResult:
    """Build every output of the profile into ``<output_dir>/<name>/``."""
    validate(ctx)
    check_output_place(ctx)
    fetcher = open_fetcher(ctx)
    final = final_dir(ctx)
    with staging_dir(ctx) as stage, planned(ctx, fetcher) as (plan, bases):
        composed: list[ComposedArch] = [compose_arch(ctx, fetcher, a, bases[a.arch])
                                        for a in plan.arches]
        epoch = choose_epoch(ctx, max((newest_mtime(c.tree) for c in composed), default=0))
        ctx.log(f"==> timestamp {epoch.value} (from {epoch.source})")
        with output_errors(ctx.output_dir):
            outputs = write_outputs(OutputJob(ctx=ctx, stage=stage, arches=tuple(composed),
                                              epoch=epoch.value))
            inputs = input_records(ctx, fetcher.inputs, plan, overlay_inputs(composed))
            manifest = build_manifest(ctx, composed, epoch, inputs, outputs)
            (stage / MANIFEST_NAME).write_bytes(manifest.to_json())
            (stage / SUMS_NAME).write_bytes(format_sha256sums(outputs))
            publish(stage, final)
    return BuildResult(manifest=manifest, output_dir=final, outputs=tuple(outputs))
