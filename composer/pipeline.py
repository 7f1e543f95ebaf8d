"""build(): the whole build as a flat list of verb_noun steps.

profile → fetch + verify inputs → compose one tree per arch → choose the epoch →
write outputs into a staging folder → hashes + manifest → publish atomically.
This is the only module that knows the ``out/`` layout.

Stages a profile may not need (the APK engine, the image writers, OpenPGP, progress
bars) are imported where first used, so a small build does not pay their start-up.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from composer.sources.minirootfs import VerifiedMinirootfs
    from composer.sources.trust import ReleaseKey

from composer.archive import load_tar
from composer.context import BuildContext
from composer.errors import NotSupportedError, OutputError
from composer.manifest import (
    MANIFEST_NAME,
    SUMS_NAME,
    BuildManifest,
    InputRecord,
    OutputRecord,
    format_sha256sums,
)
from composer.overlay import OverlayInput, apply_overlay
from composer.profile.model import Base, IsoOutput, TarOutput
from composer.sources.cache import ContentCache
from composer.sources.fetch import Fetcher, FetchSettings
from composer.tree import FileTree
from composer.writers.compress import Compression, open_compressor
from composer.writers.stream import HashingWriter
from composer.writers.tar import ROOTFS_STYLE, write_tar


@dataclass
class ArchBuild:
    """One architecture's composed tree and what went into it."""

    arch: str
    release: str
    tree: FileTree
    minirootfs: VerifiedMinirootfs | None
    packages: tuple[str, ...] = ()
    system_changes: list[str] = field(default_factory=list)
    scripts_not_run: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class BuildResult:
    manifest: BuildManifest
    output_dir: Path
    outputs: tuple[OutputRecord, ...]


def check_supported(ctx: BuildContext) -> None:
    """Refuse, before any download, what this version cannot build yet."""
    profile = ctx.profile
    for output in profile.outputs:
        if isinstance(output, IsoOutput):
            raise NotSupportedError(
                f"{ctx.loaded.path}: outputs: format 'iso' (variant {profile.variant}) needs the "
                "bootable ISO writer, which this version of alpine-composer does not have yet")
    if profile.packages or profile.base == Base.PACKAGES:
        from composer.apk_support import require_apk_engine

        require_apk_engine(ctx)
    if any(not isinstance(output, TarOutput) for output in profile.outputs):
        from composer.oci_support import check_image_outputs

        check_image_outputs(ctx)


def open_fetcher(ctx: BuildContext) -> Fetcher:
    settings = FetchSettings(offline=ctx.offline, progress=ctx.progress, retries=ctx.retries,
                             backoff=ctx.retry_delay, connect_timeout=ctx.timeout,
                             read_timeout=ctx.timeout, log=ctx.log)
    return Fetcher(settings, ContentCache(ctx.cache_dir))


def fetch_trust_key(ctx: BuildContext, fetcher: Fetcher) -> ReleaseKey | None:
    """The pinned release key; not needed when the rootfs is built from packages alone."""
    if ctx.profile.base == Base.PACKAGES:
        return None
    from composer.sources.minirootfs import fetch_release_key

    trust = ctx.profile.trust
    return fetch_release_key(fetcher, key_ref=trust.key, base_dir=ctx.loaded.base_dir,
                             fingerprint=trust.fingerprint)


def fetch_base(ctx: BuildContext, fetcher: Fetcher, key: ReleaseKey, arch: str) -> VerifiedMinirootfs:
    profile = ctx.profile
    release = ctx.pinned_release.get(arch) or profile.release
    from composer.sources.minirootfs import fetch_minirootfs

    return fetch_minirootfs(fetcher, mirror=profile.mirror, branch=profile.branch, arch=arch,
                            release=release, key=key, allow_unsigned=profile.trust.allow_unsigned,
                            log=ctx.log)


def load_base_tree(mini: VerifiedMinirootfs) -> FileTree:
    tree = FileTree()
    try:
        with open(mini.path, "rb") as fh:
            load_tar(fh, tree, source=os.path.basename(mini.url))
    except BaseException:
        tree.close()
        raise
    return tree


def compose_arch(ctx: BuildContext, fetcher: Fetcher, key: ReleaseKey | None, arch: str,
                 overlay_inputs: list[OverlayInput]) -> ArchBuild:
    """Fetch, verify and compose the tree for one architecture."""
    profile = ctx.profile
    if profile.base == Base.MINIROOTFS:
        assert key is not None
        ctx.log(f"==> {profile.name} ({arch}): fetching the minirootfs")
        mini = fetch_base(ctx, fetcher, key, arch)
        build = ArchBuild(arch=arch, release=mini.version, tree=load_base_tree(mini),
                          minirootfs=mini)
    else:
        release = ctx.pinned_release.get(arch) or profile.release or profile.branch
        build = ArchBuild(arch=arch, release=release, tree=FileTree(), minirootfs=None)
    try:
        if profile.packages:
            from composer.apk_support import install_profile_packages

            install_profile_packages(ctx, fetcher, build)
        if profile.accounts.groups or profile.accounts.users or profile.services:
            from composer.apk_support import configure_system

            build.system_changes = configure_system(ctx, build, system_epoch(ctx, build))
        ctx.log(f"==> {profile.name} ({arch}): applying the overlay")
        roots = None if ctx.allow_host_paths else [f.parent for f in ctx.loaded.files]
        read = apply_overlay(build.tree, profile.overlay, base_dir=ctx.loaded.base_dir,
                             allowed_roots=roots)
        if not overlay_inputs:
            overlay_inputs.extend(read)
    except BaseException:
        build.tree.close()
        raise
    return build


def system_epoch(ctx: BuildContext, build: ArchBuild) -> int:
    """Dates written into account files: the fixed epoch if known, else the newest input."""
    for value in (ctx.pinned_epoch[0] if ctx.pinned_epoch else None, ctx.env_epoch,
                  ctx.profile.source_date_epoch):
        if value is not None:
            return value
    return max((e.mtime for e in build.tree.entries.values()), default=0)


def choose_epoch(ctx: BuildContext, builds: list[ArchBuild]) -> tuple[int, str]:
    """SOURCE_DATE_EPOCH, else the profile's value, else the newest timestamp among the inputs."""
    if ctx.pinned_epoch is not None:
        return ctx.pinned_epoch
    if ctx.env_epoch is not None:
        return ctx.env_epoch, "environment"
    if ctx.profile.source_date_epoch is not None:
        return ctx.profile.source_date_epoch, "profile"
    newest = max((e.mtime for b in builds for e in b.tree.entries.values()), default=0)
    return newest, "inputs"


def output_file_name(ctx: BuildContext, build: ArchBuild, suffix: str) -> str:
    return f"{ctx.profile.name}-{build.release}-{build.arch}{suffix}"


@contextmanager
def progress_bar(ctx: BuildContext, total: int, desc: str) -> Iterator[Any]:
    """A per-entry callback that drives a tqdm bar on a terminal, and does nothing elsewhere."""
    if not ctx.progress:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="entry", desc=desc, leave=False) as bar:
        yield lambda _entry: bar.update()


def write_tar_output(ctx: BuildContext, stage: Path, build: ArchBuild, output: TarOutput,
                     epoch: int) -> OutputRecord:
    compression = Compression(output.compression.value)
    name = output_file_name(ctx, build, ".tar" + compression.suffix)
    ctx.log(f"==> writing {name}")
    with open(stage / name, "wb") as fh, progress_bar(ctx, len(build.tree), name) as bar:
        hashed = HashingWriter(fh)
        with open_compressor(hashed, compression) as comp:  # type: ignore[arg-type]
            write_tar(build.tree, comp, mtime=epoch, style=ROOTFS_STYLE,  # type: ignore[arg-type]
                      on_entry=bar)
    return OutputRecord(path=name, sha256=hashed.hexdigest, size=hashed.size, format="tar",
                        arch=build.arch)


def write_outputs(ctx: BuildContext, stage: Path, builds: list[ArchBuild],
                  epoch: int) -> list[OutputRecord]:
    records: list[OutputRecord] = []
    for output in ctx.profile.outputs:
        if isinstance(output, TarOutput):
            for build in builds:
                records.append(write_tar_output(ctx, stage, build, output, epoch))
        else:
            from composer.oci_support import write_image_output

            records.extend(write_image_output(ctx, stage, builds, output, epoch))
    if ctx.profile.sbom:
        from composer.oci_support import write_sboms

        records.extend(write_sboms(ctx, stage, builds, epoch))
    paths = [r.path for r in records]
    duplicates = {p for p in paths if paths.count(p) > 1}
    if duplicates:
        raise OutputError(f"{ctx.loaded.path}: outputs: two outputs would both write "
                          f"{sorted(duplicates)[0]}; list each format once")
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


def _input_kind(url: str, minirootfs_urls: set[str], key_url: str) -> str:
    if url == key_url:
        return "release-key"
    if url in minirootfs_urls:
        return "minirootfs"
    name = url.rsplit("/", 1)[-1]
    if name.endswith(".apk"):
        return "package"
    if name.startswith("APKINDEX"):
        return "apkindex"
    if name.endswith(".asc"):
        return "signature"
    return "metadata"


def collect_inputs(ctx: BuildContext, fetcher: Fetcher, builds: list[ArchBuild],
                   key: ReleaseKey | None,
                   overlay_inputs: list[OverlayInput]) -> tuple[InputRecord, ...]:
    """Every fetched input (classified) plus the overlay's host files."""
    minis = {b.minirootfs.url: b for b in builds if b.minirootfs is not None}
    records: list[InputRecord] = []
    for fetched in fetcher.inputs:
        kind = _input_kind(fetched.url, set(minis), key.source if key else "")
        build = minis.get(fetched.url)
        records.append(InputRecord(
            kind=kind,
            name=ctx.profile.trust.key if kind == "release-key" else fetched.url.rsplit("/", 1)[-1],
            sha256=fetched.sha256, size=fetched.size, url=fetched.url,
            arch=build.arch if build else None,
            signed_by=build.minirootfs.signed_by if build and build.minirootfs else None,
            fingerprint=key.fingerprint.upper() if key and kind == "release-key" else None))
    records.extend(InputRecord(kind="overlay", name=i.path, sha256=i.sha256, size=i.size)
                   for i in overlay_inputs)
    return tuple(records)


def fetch_inputs(ctx: BuildContext) -> list[InputRecord]:
    """Download and verify every input, compose nothing else (the ``fetch`` command)."""
    check_supported(ctx)
    fetcher = open_fetcher(ctx)
    key = fetch_trust_key(ctx, fetcher)
    builds: list[ArchBuild] = []
    try:
        for arch in ctx.profile.arch:
            builds.append(compose_arch(ctx, fetcher, key, arch.value, []))
        return list(collect_inputs(ctx, fetcher, builds, key, []))
    finally:
        for b in builds:
            b.tree.close()


def build(ctx: BuildContext) -> BuildResult:
    """Build every output of the profile into ``<output_dir>/<name>/``."""
    profile = ctx.profile
    check_supported(ctx)
    fetcher = open_fetcher(ctx)
    key = fetch_trust_key(ctx, fetcher)
    overlay_inputs: list[OverlayInput] = []
    builds: list[ArchBuild] = []
    try:
        for arch in profile.arch:
            builds.append(compose_arch(ctx, fetcher, key, arch.value, overlay_inputs))
        epoch, epoch_source = choose_epoch(ctx, builds)
        ctx.log(f"==> timestamp {epoch} (from {epoch_source})")
        final = ctx.output_dir / profile.name
        with staging_dir(ctx) as stage:
            outputs = write_outputs(ctx, stage, builds, epoch)
            manifest = BuildManifest(
                tool_version=ctx.tool_version,
                profile_name=profile.name,
                profile_digest=ctx.loaded.digest,
                variant=profile.variant.value,
                branch=profile.branch,
                releases={b.arch: b.release for b in builds},
                source_date_epoch=epoch,
                epoch_source=epoch_source,
                inputs=collect_inputs(ctx, fetcher, builds, key, overlay_inputs),
                outputs=tuple(outputs),
                packages={b.arch: b.packages for b in builds if b.packages},
                scripts_not_run=tuple(s for b in builds for s in b.scripts_not_run),
                notes=tuple(f"{b.arch}: {c}" for b in builds for c in b.system_changes),
            )
            (stage / MANIFEST_NAME).write_bytes(manifest.to_json())
            (stage / SUMS_NAME).write_bytes(format_sha256sums(outputs))
            publish(stage, final)
        return BuildResult(manifest=manifest, output_dir=final, outputs=tuple(outputs))
    finally:
        for b in builds:
            b.tree.close()
