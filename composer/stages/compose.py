"""Compose one architecture's tree from its plan: base + packages + system config + overlay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from composer.context import BuildContext
from composer.errors import ProfileError
from composer.overlay import OverlayInput, apply_overlay
from composer.profile.model import Base
from composer.stages.base import newest_mtime, release_from_tree
from composer.stages.epoch import choose_epoch
from composer.stages.plan import ArchPlan
from composer.tree import FileTree, StageSnapshot

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
    stages: tuple[StageSnapshot, ...] = ()
    """The tree as the base and the package stages left it (``layering: stages``)."""


def compose_arch(ctx: BuildContext, fetcher: Fetcher, plan: ArchPlan, tree: FileTree) -> ComposedArch:
    """Install the plan's packages into the base ``tree``, then accounts, services, overlay."""
    profile = ctx.profile
    release = plan.release
    packages: tuple[str, ...] = ()
    scripts: tuple[dict[str, Any], ...] = ()
    base_name = plan.minirootfs.url.rsplit("/", 1)[-1] if plan.minirootfs else "empty root"
    stages = [StageSnapshot("base", dict(tree.entries), f"base: {base_name}")]
    if plan.packages is not None:
        from composer.stages.packages import install_planned

        ctx.log(f"==> {profile.name} ({plan.arch}): installing {len(plan.packages.wanted)} "
                "package(s)")
        installed = install_planned(tree, plan.packages, plan.arch, fetcher)
        packages, scripts = installed.packages, installed.scripts_not_run
        if profile.base == Base.PACKAGES:
            release = release_from_tree(tree) or profile.release or profile.branch
    stages.append(StageSnapshot("packages", dict(tree.entries),
                                f"packages: {' '.join(profile.packages)} and their dependencies"))
    changes: list[str] = []
    where = str(ctx.loaded.path)
    from composer.system.configure import configure_accounts

    changes += configure_accounts(tree, profile.accounts,
                                  epoch=choose_epoch(ctx, newest_mtime(tree)).value, where=where)
    ctx.log(f"==> {profile.name} ({plan.arch}): applying the overlay")
    roots = None if ctx.allow_host_paths else [f.parent for f in ctx.loaded.files]
    read = apply_overlay(tree, profile.overlay, base_dir=ctx.loaded.base_dir, allowed_roots=roots,
                         arch=plan.arch)
    if profile.services:
        from composer.system.configure import enable_services

        changes += enable_services(tree, profile.services,
                                   epoch=choose_epoch(ctx, newest_mtime(tree)).value, where=where)
    check_composed(ctx, tree)
    return ComposedArch(arch=plan.arch, release=release, tree=tree, minirootfs=plan.minirootfs,
                        packages=packages, system_changes=tuple(changes), scripts_not_run=scripts,
                        overlay_inputs=tuple(read), stages=tuple(stages))


def check_composed(ctx: BuildContext, tree: FileTree) -> None:
    """What the profile promises about the finished tree: each user's shell exists, the
    image config's user is an account of the image, no machine's identity is baked in, and
    an image that boots can start its init and let someone log in."""
    from composer.system.configure import check_logins
    from composer.system.readiness import check_inittab, check_login_shells, machine_identity

    where = ctx.loaded.path
    identity = machine_identity(tree)
    if identity:
        raise ProfileError(f"{where}: {', '.join(identity)} would be shared by every machine "
                           "booted from this image; SSH host keys, /etc/machine-id and random "
                           "seeds are made at first boot (remove them from the overlay)")
    check_logins(tree, ctx.profile.accounts, where=str(where))
    if any(o.format == "iso" for o in ctx.profile.outputs):
        problems = check_inittab(tree) + check_login_shells(tree)
        if problems:
            raise ProfileError(f"{where}: the image would not boot to a login: "
                               + "; ".join(str(p) for p in problems))
    for i, user in enumerate(ctx.profile.accounts.users):
        if not _exists(tree, user.shell):
            raise ProfileError(f"{where}: accounts.users[{i}].shell: {user.shell} does not exist in "
                               f"the image (add the package that provides it)")
    image_user = ctx.profile.config.user
    if image_user and any(o.format in IMAGE_FORMATS for o in ctx.profile.outputs):
        name, _, group = image_user.partition(":")
        for value, table, label in ((name, "etc/passwd", "user"), (group, "etc/group", "group")):
            if value and not value.isdigit() and value not in _names(tree, table):
                raise ProfileError(f"{where}: config.user: {label} {value!r} is not in the image's "
                                   f"/{table} (add it under accounts:, or give a numeric id)")


IMAGE_FORMATS = ("oci", "oci-archive", "docker-archive")


def _exists(tree: FileTree, path: str) -> bool:
    """Whether ``path`` names an entry of the tree, following symlinks on the way as the
    kernel would."""
    from composer.system.paths import resolve_entry

    return resolve_entry(tree, path) is not None


def _names(tree: FileTree, table: str) -> set[str]:
    entry = tree.get(table)
    if entry is None or entry.blob is None:
        return set()
    text = entry.blob.read().decode("utf-8", "replace")
    return {line.split(":", 1)[0] for line in text.splitlines() if line}
