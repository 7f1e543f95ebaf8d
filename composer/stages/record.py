"""What the build records: every input with its role, and the manifest."""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from composer.context import BuildContext
from composer.manifest import LOCK_NAME, BuildManifest, InputRecord, InputRole, OutputRecord
from composer.overlay import OverlayInput
from composer.profile.model import Compression, IsoOutput, Output
from composer.stages.compose import ComposedArch
from composer.stages.epoch import Epoch
from composer.stages.plan import BuildPlan
from composer.writers.compress import libraries

if TYPE_CHECKING:
    from composer.sources.fetch import FetchedInput


def input_records(ctx: BuildContext, fetched: Sequence[FetchedInput], plan: BuildPlan,
                  overlay: Sequence[OverlayInput] = ()) -> tuple[InputRecord, ...]:
    """Every fetched input under the role its fetcher gave it, plus the overlay's host files."""
    minis = {a.minirootfs.url: a.minirootfs for a in plan.arches if a.minirootfs is not None}
    arch_of = {a.minirootfs.url: a.arch for a in plan.arches if a.minirootfs is not None}
    key = plan.release_key
    records: list[InputRecord] = []
    for item in fetched:
        mini = minis.get(item.url) if item.role == InputRole.MINIROOTFS else None
        is_key = item.role == InputRole.RELEASE_KEY
        beside = _profile_relative(ctx, item.url)
        records.append(InputRecord(
            kind=item.role,
            name=ctx.profile.trust.key if is_key else beside or item.url.rsplit("/", 1)[-1],
            sha256=item.sha256, size=item.size, url=None if beside else item.url,
            arch=arch_of.get(item.url) if mini else None,
            signed_by=mini.signed_by if mini else None,
            fingerprint=key.fingerprint.upper() if key and is_key else None))
    records.extend(InputRecord(kind=InputRole.OVERLAY, name=i.path, sha256=i.sha256, size=i.size)
                   for i in overlay)
    return tuple(records)


def _profile_relative(ctx: BuildContext, url: str) -> str | None:
    """A file beside the profile (a key file) by its path relative to the profile, as the
    profile names it: where the checkout lives is not part of what was built."""
    if not url.startswith("file://"):
        return None
    path = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    base = ctx.loaded.base_dir
    if not path.is_relative_to(base):
        return None
    return path.relative_to(base).as_posix()


def overlay_inputs(composed: Sequence[ComposedArch]) -> tuple[OverlayInput, ...]:
    """The overlay reads the same host files for every architecture: record them once."""
    return next((c.overlay_inputs for c in composed if c.overlay_inputs), ())


def compressions(outputs: Sequence[Output]) -> set[Compression]:
    """What the outputs compress with: each archive's setting; an ISO's initramfs is gzip."""
    kinds = {Compression.GZIP for o in outputs if isinstance(o, IsoOutput)}
    kinds.update(Compression(o.compression.value) for o in outputs if hasattr(o, "compression"))
    return kinds


def build_manifest(ctx: BuildContext, composed: Sequence[ComposedArch],
                   epoch: Epoch, inputs: tuple[InputRecord, ...],
                   outputs: Sequence[OutputRecord], *, profile_digest: str,
                   lock: bytes) -> BuildManifest:
    """The manifest; ``profile_digest`` covers the profile and its overlay files (never the
    build mirror), ``lock`` is the plan the build followed as it is written beside it."""
    profile = ctx.profile
    return BuildManifest(
        tool_version=ctx.tool_version,
        profile_name=profile.name,
        profile_digest=profile_digest,
        variant=profile.variant.value,
        branch=profile.branch,
        mirror=profile.mirror,
        releases={c.arch: c.release for c in composed},
        source_date_epoch=epoch.value,
        epoch_source=epoch.source,
        inputs=inputs,
        outputs=tuple(outputs),
        packages={c.arch: c.packages for c in composed if c.packages},
        scripts_not_run=tuple(s for c in composed for s in c.scripts_not_run),
        notes=tuple(f"{c.arch}: {change}" for c in composed for change in c.system_changes)
        + _unlocked_note(ctx),
        compressors=tuple(asdict(lib) for lib in libraries(compressions(profile.outputs))),
        lock={"file": LOCK_NAME, "sha256": hashlib.sha256(lock).hexdigest(),
              "locked": ctx.lock is not None},
    )


def _unlocked_note(ctx: BuildContext) -> tuple[str, ...]:
    if ctx.lock is None and ctx.profile.branch == "edge":
        return ("edge built without a lock: not reproducible from the live mirror later; the "
                "indexes read are the inputs of kind apkindex",)
    return ()
