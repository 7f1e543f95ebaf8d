"""The plan: per architecture, the release to start from and the exact package set.

Everything the later stages need is decided here, before any tree is changed: the
verified minirootfs (URL, sha256, signer), the repositories and their keys, the
world, the resolved package set from the pure resolver, and the installer's epoch.
``fetch`` is a plan plus the package downloads; ``build`` composes from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from composer.context import BuildContext
from composer.profile.model import Base
from composer.stages.epoch import Epoch, choose_epoch

if TYPE_CHECKING:
    # The APK engine (indexes, keys, resolver) loads only when the profile lists packages.
    from composer.apk.index import PackageInfo
    from composer.apk.keys import TrustedKeys
    from composer.sources.fetch import Fetcher
    from composer.sources.minirootfs import VerifiedMinirootfs
    from composer.sources.trust import ReleaseKey
    from composer.stages.base import BaseFacts
    from composer.stages.repositories import LoadedIndex, RepositorySource


@dataclass(frozen=True)
class PackagePlan:
    """The resolved package set of one architecture and what installing it needs."""

    repositories: tuple[RepositorySource, ...]
    keys: TrustedKeys
    key_files: Mapping[str, bytes]
    world: tuple[str, ...]
    packages: tuple[PackageInfo, ...]
    wanted: tuple[PackageInfo, ...]
    write_repositories: bool
    epoch: int
    indexes: tuple[LoadedIndex, ...] = ()
    pinned: Mapping[str, str] = field(default_factory=dict)
    """name → the .apk's sha256, for a plan loaded from a lock (empty when resolved)."""


@dataclass(frozen=True)
class ArchPlan:
    """One architecture: its release, the verified minirootfs (None for ``base: packages``)
    and its packages (None when the profile lists none)."""

    arch: str
    release: str
    minirootfs: VerifiedMinirootfs | None
    packages: PackagePlan | None
    epoch: Epoch | None = None


@dataclass(frozen=True)
class BuildPlan:
    """The whole build's plan: the release key and one plan per architecture."""

    release_key: ReleaseKey | None
    arches: tuple[ArchPlan, ...]


def plan_packages(ctx: BuildContext, fetcher: Fetcher, arch: str, branch: str, base: BaseFacts,
                  requested: Sequence[str]) -> PackagePlan:
    """Read the signed indexes and resolve the base world plus ``requested`` (the profile's
    packages, or another set such as boot files); downloads nothing but metadata."""
    from composer.apk.resolver import resolve
    from composer.stages.repositories import (
        fetch_indexes,
        fetch_package_keys,
        repository_sources,
        world_constraints,
    )

    profile = ctx.profile
    sources = repository_sources(profile, branch)
    keys = fetch_package_keys(ctx.loaded, fetcher, base.keys)
    ctx.log(f"==> {profile.name} ({arch}): reading {len(sources)} repository index(es)")
    indexes = fetch_indexes(fetcher, sources, arch, keys.trusted)
    world = world_constraints(requested, base.world)
    resolution = resolve(world, [i.index for i in indexes], installed=list(base.installed_index),
                         arch=arch)
    have = {r.name: r.checksum for r in base.installed}
    wanted = tuple(p for p in resolution.packages if have.get(p.name) != p.checksum)
    newest = max((p.build_time or 0 for p in resolution.packages), default=0)
    return PackagePlan(
        repositories=tuple(sources), keys=keys.trusted, key_files=dict(keys.files),
        world=tuple(d.format() for d in world), packages=tuple(resolution.packages),
        wanted=wanted,
        write_repositories=profile.repositories is not None or profile.base == Base.PACKAGES,
        epoch=choose_epoch(ctx, max(newest, base.newest_mtime)).value, indexes=tuple(indexes))


def requested_packages(ctx: BuildContext, arch: str) -> list[str]:
    """The profile's packages (its variant's included) plus what its ISO and disk outputs boot
    with on ``arch``: a kernel, syslinux only where BIOS exists, the verity tool."""
    if not any(output.format in ("iso", "disk") for output in ctx.profile.outputs):
        return list(ctx.profile.packages)
    from composer.stages.boot_plan import image_packages

    extra = [name for name in image_packages(ctx, arch) if name not in ctx.profile.packages]
    return [*ctx.profile.packages, *extra]


def plan_arch(ctx: BuildContext, fetcher: Fetcher, arch: str, mini: VerifiedMinirootfs | None,
              base: BaseFacts | None, base_mtime: int = 0) -> ArchPlan:
    """One architecture's plan; ``base`` is read from its base tree when packages are wanted
    (``base_mtime``: the newest timestamp in that tree)."""
    profile = ctx.profile
    if mini is not None:
        release = mini.version
    else:
        release = ctx.pinned_release.get(arch) or profile.release or profile.branch
    packages = None
    requested = requested_packages(ctx, arch)
    if requested:
        from composer.stages.repositories import repository_branch

        assert base is not None
        branch = repository_branch(profile, release if mini is not None else profile.release)
        packages = plan_packages(ctx, fetcher, arch, branch, base, requested)
    return ArchPlan(arch=arch, release=release, minirootfs=mini, packages=packages,
                    epoch=plan_epoch(ctx, packages, base_mtime))


def plan_epoch(ctx: BuildContext, packages: PackagePlan | None, base_mtime: int) -> Epoch:
    """The timestamp the plan implies (what a lock records): the installer's epoch, else the
    rule applied to the base tree alone."""
    return choose_epoch(ctx, packages.epoch if packages is not None else base_mtime)


def wanted_packages(plan: BuildPlan) -> Sequence[tuple[str, PackageInfo, TrustedKeys, str | None]]:
    """(arch, package, keys, pinned sha256) for every package a build must download, in plan
    order."""
    return [(a.arch, info, a.packages.keys, a.packages.pinned.get(info.name))
            for a in plan.arches if a.packages for info in a.packages.wanted]
