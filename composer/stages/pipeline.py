"""``build(ctx)`` and ``fetch(ctx)``: the stages in data-flow order, as flat lists of steps.

validate → plan → compose → epoch → outputs → manifest → publish. Stages a
profile may not need (the APK engine, the image writers, OpenPGP, progress bars)
are imported where first used, so a small build does not pay their start-up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from composer.context import BuildContext
from composer.errors import VerificationError
from composer.lockfile import LockFile, compare_locks, lock_path_for, profile_changes, render_lock
from composer.manifest import (
    LOCK_NAME,
    MANIFEST_NAME,
    SUMS_NAME,
    BuildManifest,
    InputRecord,
    OutputRecord,
    format_sha256sums,
)
from composer.profile.model import Base
from composer.provenance import PROVENANCE_NAME, provenance_statement
from composer.sources.cache import ContentCache
from composer.sources.fetch import Fetcher, FetchSettings
from composer.stages.base import ReleaseKeySource, fetch_base, load_base_tree, newest_mtime, read_base
from composer.stages.compose import ComposedArch, compose_arch
from composer.stages.epoch import choose_epoch
from composer.stages.kind import OutputJob
from composer.stages.lock import (
    LockReport,
    check_profile,
    current_state,
    lock_from_plan,
    read_lock,
    write_lock_file,
)
from composer.stages.outputs import (
    check_output_place,
    final_dir,
    output_errors,
    publish,
    staging_dir,
    write_outputs,
)
from composer.stages.plan import ArchPlan, BuildPlan, plan_arch, wanted_packages
from composer.stages.record import build_manifest, input_records, overlay_inputs
from composer.stages.validate import validate
from composer.tree import FileTree

if TYPE_CHECKING:
    from composer.sign import SigningKey


@dataclass(frozen=True)
class BuildResult:
    """A published build: its manifest, folder and output records."""

    manifest: BuildManifest
    output_dir: Path
    outputs: tuple[OutputRecord, ...]


def open_fetcher(ctx: BuildContext, *, revalidate: bool = False) -> Fetcher:
    """The build's fetcher; ``revalidate`` asks the mirror about every cached index and
    release list (a conditional request), as a lock must reflect the mirror as it is now."""
    settings = FetchSettings(offline=ctx.offline, progress=ctx.progress, retries=ctx.retries,
                             backoff=ctx.retry_delay, connect_timeout=ctx.timeout,
                             read_timeout=ctx.timeout, log=ctx.log,
                             **({"metadata_ttl": 0.0} if revalidate else {}))
    return Fetcher(settings, ContentCache(ctx.cache_dir))


@contextmanager
def planned(ctx: BuildContext, fetcher: Fetcher) -> Iterator[tuple[BuildPlan, dict[str, FileTree]]]:
    """Fetch and verify the base of every architecture and plan it (resolved, or loaded from
    ``ctx.lock``); yields the plan and the loaded base trees (closed on exit unless a later
    stage took them over)."""
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
                if ctx.profile.packages else None
            if ctx.lock is not None:
                from composer.stages.locked import plan_locked_arch

                arches.append(plan_locked_arch(ctx, fetcher, arch, mini, facts, newest_mtime(tree)))
            else:
                arches.append(plan_arch(ctx, fetcher, arch, mini, facts, newest_mtime(tree)))
        yield BuildPlan(release_key=keys.key, arches=tuple(arches)), bases


def load_signer(ctx: BuildContext) -> SigningKey | None:
    """``build --sign``: the key is read (and its passphrase tried) before any download."""
    if ctx.sign_key is None:
        return None
    from composer.sign import load_signing_key

    key = load_signing_key(ctx.sign_key, ctx.sign_passphrase)
    ctx.log(f"==> signing SHA256SUMS with {key.fingerprint}")
    return key


def sign_outputs(stage: Path, key: SigningKey) -> None:
    """Detached signatures of SHA256SUMS and of the provenance statement, beside them."""
    from composer.sign import SIGNATURE_SUFFIX, sign_detached

    for name in (SUMS_NAME, PROVENANCE_NAME):
        (stage / (name + SIGNATURE_SUFFIX)).write_bytes(sign_detached(key, (stage / name).read_bytes()))


def check_lock_applies(ctx: BuildContext) -> None:
    """A locked build starts by checking that the profile is the one locked; an unlocked
    build of the moving edge branch says once that it cannot be repeated later."""
    if ctx.lock is not None:
        check_profile(ctx, ctx.lock, str(ctx.lock_path or "the lock"), strict=ctx.lock_strict)
    elif ctx.profile.branch == "edge":
        ctx.log("warning: edge changes daily and this build is not locked: the same profile "
                "will not give the same bytes later (the indexes it reads are recorded in "
                "manifest.json; `alpine-composer lock` pins them)")


def fetch(ctx: BuildContext) -> list[InputRecord]:
    """Download and verify every input the plan names; compose nothing (the ``fetch`` command)."""
    validate(ctx)
    check_lock_applies(ctx)
    fetcher = open_fetcher(ctx)
    with planned(ctx, fetcher) as (plan, _bases):
        _download(fetcher, plan)
    return list(input_records(ctx, fetcher.inputs, plan))


def _download(fetcher: Fetcher, plan: BuildPlan) -> None:
    if any(a.packages for a in plan.arches):
        from composer.stages.packages import download_packages

        download_packages(fetcher, wanted_packages(plan))


def resolve_lock(ctx: BuildContext, *, with_files: bool = True) -> LockFile:
    """Resolve the profile afresh and write the plan down (``alpine-composer lock``); with
    ``with_files`` the packages are downloaded and verified so their digests can be pinned."""
    validate(ctx)
    ctx = replace(ctx, lock=None, lock_path=None)
    state = current_state(ctx)
    fetcher = open_fetcher(ctx, revalidate=True)
    with planned(ctx, fetcher) as (plan, _bases):
        if with_files:
            _download(fetcher, plan)
    return lock_from_plan(ctx, plan, fetcher.inputs, state, with_files=with_files)


def build(ctx: BuildContext) -> BuildResult:
    """Build every output of the profile into ``<output_dir>/<name>/``."""
    validate(ctx)
    check_lock_applies(ctx)
    check_output_place(ctx)
    signer = load_signer(ctx)
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
            overlay = overlay_inputs(composed)
            inputs = input_records(ctx, fetcher.inputs, plan, overlay)
            state = current_state(ctx, overlay)
            lock = ctx.lock or lock_from_plan(ctx, plan, fetcher.inputs, state)
            lock_bytes = render_lock(lock)
            (stage / LOCK_NAME).write_bytes(lock_bytes)
            manifest = build_manifest(ctx, composed, epoch, inputs, outputs,
                                      profile_digest=state.digest, lock=lock_bytes)
            (stage / MANIFEST_NAME).write_bytes(manifest.to_json())
            (stage / PROVENANCE_NAME).write_bytes(provenance_statement(
                outputs=outputs, lock=lock, lock_sha256=hashlib.sha256(lock_bytes).hexdigest(),
                image_mirror=ctx.profile.image_mirror, tool_version=ctx.tool_version,
                profile_file=ctx.loaded.path.name, releases=manifest.releases))
            (stage / SUMS_NAME).write_bytes(format_sha256sums(outputs))
            if signer is not None:
                sign_outputs(stage, signer)
            publish(stage, final)
    return BuildResult(manifest=manifest, output_dir=final, outputs=tuple(outputs))


def lock_profile(ctx: BuildContext, explicit: Path | None, *, mode: str) -> LockReport:
    """``alpine-composer lock``: ``mode`` is ``lock`` (write when missing or when the profile
    changed), ``update`` (resolve again and write) or ``check`` (report a stale lock)."""
    path = explicit or lock_path_for(ctx.loaded.path)
    old: LockFile | None = None
    changed: list[str] = []
    if path.exists() or mode == "check":
        try:
            old = read_lock(path)
        except VerificationError:
            if mode != "update":
                raise
            ctx.log(f"warning: {path} cannot be read; writing it again")
        if old is not None:
            changed = profile_changes(old.profile, current_state(ctx))
    if mode == "check":
        assert old is not None
        if changed:
            return LockReport(path, written=False, stale=True,
                              changes=[f"profile changed: {c}" for c in changed],
                              summary="the profile changed since locking")
        fresh = resolve_lock(ctx, with_files=False)
        diff = compare_locks(old, fresh, with_files=False)
        return LockReport(path, written=False, stale=bool(diff), changes=diff.lines(),
                          summary=diff.summary())
    if mode == "lock" and old is not None and not changed:
        return LockReport(path, written=False, stale=False, changes=[], summary="up to date")
    new = resolve_lock(ctx)
    write_lock_file(path, render_lock(new))
    diff = compare_locks(old, new)
    lines = [f"profile changed: {c}" for c in changed] + diff.lines()
    return LockReport(path, written=True, stale=False, changes=lines, summary=diff.summary())
