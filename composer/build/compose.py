"""Compose one architecture's tree from its plan: base + packages + system config + overlay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from composer.build.base import newest_mtime, release_from_tree
from composer.build.epoch import choose_epoch
from composer.build.plan import ArchPlan
from composer.context import BuildContext
from composer.overlay import OverlayInput, apply_overlay
from composer.profile.model import Base
from composer.tree import FileTree

if TYPE_CHECKING:
    from composer.sources.fetch import Fetcher
    from composer.sources.minirootfs import VerifiedMinirootfs


@dataclass(frozen=True)
class ComposedArch:
    """One architecture's finished tree and what went into it.

    The tree is owned by whoever called :func:`compose_arch`, which closes it.
    """

    arch: str
    release: str
    tree: FileTree
    minirootfs: VerifiedMinirootfs | None
    packages: tuple[str, ...] = ()
    system_changes: tuple[str, ...] = ()
    scripts_not_run: tuple[dict[str, Any], ...] = ()
    overlay_inputs: tuple[OverlayInput, ...] = ()


def compose_arch(ctx: BuildContext, fetcher: Fetcher, plan: ArchPlan, tree: FileTree) -> ComposedArch:
    """Install the plan's packages into the base ``tree``, then accounts, services, overlay."""
    profile = ctx.profile
    release = plan.release
    packages: tuple[str, ...] = ()
    scripts: tuple[dict[str, Any], ...] = ()
    if plan.packages is not None:
        from composer.build.packages import install_planned

        ctx.log(f"==> {profile.name} ({plan.arch}): installing {len(plan.packages.wanted)} "
                "package(s)")
        installed = install_planned(tree, plan.packages, plan.arch, fetcher)
        packages, scripts = installed.packages, installed.scripts_not_run
        if profile.base == Base.PACKAGES:
            release = release_from_tree(tree) or profile.release or profile.branch
    changes: list[str] = []
    if profile.accounts.groups or profile.accounts.users or profile.services:
        from composer.system.configure import configure_system

        changes = configure_system(tree, profile.accounts, profile.services,
                                   epoch=choose_epoch(ctx, newest_mtime(tree)).value,
                                   where=str(ctx.loaded.path))
    ctx.log(f"==> {profile.name} ({plan.arch}): applying the overlay")
    roots = None if ctx.allow_host_paths else [f.parent for f in ctx.loaded.files]
    read = apply_overlay(tree, profile.overlay, base_dir=ctx.loaded.base_dir, allowed_roots=roots)
    return ComposedArch(arch=plan.arch, release=release, tree=tree, minirootfs=plan.minirootfs,
                        packages=packages, system_changes=tuple(changes), scripts_not_run=scripts,
                        overlay_inputs=tuple(read))
