"""One validation pass over the profile and its outputs, before any download or write.

Pure and offline: it reads only the loaded profile, so every profile error is found
in well under a second. Checks run in this order (the first failure is reported):

1. every output format has a writer in this version (``outputs.NOT_YET`` names those
   that do not);
2. package rules: repository names and URLs, the world's constraints, and
   ``base: packages`` needing ``keys:``;
3. local key files (``trust.key``, ``keys:``) exist; ``config:`` has an image output to
   shape; the output folder is not inside an overlay tree;
4. each output kind's own check (e.g. docker-archive holds one platform), and no two
   outputs claiming the same place (a format listed twice, two tars with one
   compression).

Rules the profile model enforces at load time (branch form, arch list, 'testing' only on
edge, ``base: packages`` needing packages) are not repeated here.
"""

from __future__ import annotations

from collections.abc import Callable

from composer.context import BuildContext
from composer.errors import ProfileError
from composer.profile.model import Base, ImageConfig, PinnedKey
from composer.stages.outputs import check_outputs, output_kind
from composer.urls import is_url


def check_writers_exist(ctx: BuildContext) -> None:
    for output in ctx.profile.outputs:
        output_kind(ctx, output.format)


def check_packages(ctx: BuildContext) -> None:
    profile = ctx.profile
    if not (profile.packages or profile.base == Base.PACKAGES):
        return
    from composer.stages.repositories import repository_sources, world_constraints

    repository_sources(profile, profile.branch)
    world_constraints(profile.packages, [])
    if profile.base == Base.PACKAGES and not profile.keys:
        raise ProfileError(f"{ctx.loaded.path}: keys: base: packages needs the repositories' "
                           "signing keys (there is no minirootfs to take /etc/apk/keys from)")


def check_local_files(ctx: BuildContext) -> None:
    """Key files named by path exist (a missing one is the profile's mistake, not a download's)."""
    profile = ctx.profile
    refs: list[tuple[str, str]] = []
    if profile.base == Base.MINIROOTFS:
        refs.append(("trust.key", profile.trust.key))
    for i, ref in enumerate(profile.keys):
        refs.append((f"keys[{i}]", ref.file if isinstance(ref, PinnedKey) else ref))
    for field, ref in refs:
        if is_url(ref):
            continue
        path = ctx.loaded.resolve(ref)
        if not path.is_file():
            raise ProfileError(f"{ctx.loaded.path}: {field}: {ref}: no such file (looked for {path})")


def check_image_config(ctx: BuildContext) -> None:
    """``config:`` only shapes image outputs; written without one, it would be silently lost."""
    profile = ctx.profile
    if profile.config == ImageConfig():
        return
    if not any(o.format in ("oci", "oci-archive", "docker-archive") for o in profile.outputs):
        raise ProfileError(f"{ctx.loaded.path}: config: applies to oci, oci-archive and "
                           "docker-archive outputs, and this profile has none (add one, or remove "
                           "config:)")


def check_output_outside_overlay(ctx: BuildContext) -> None:
    """An output folder inside an overlay tree would be copied into the next image."""
    out = ctx.output_dir.resolve()
    for folder in ctx.profile.overlay.tree:
        root = ctx.loaded.resolve(folder)
        if out == root or out.is_relative_to(root):
            raise ProfileError(f"{ctx.loaded.path}: overlay.tree: {folder} holds the output folder "
                               f"{ctx.output_dir}; the next build would copy its outputs into the "
                               "image (choose another --output-dir)")


CHECKS: tuple[Callable[[BuildContext], None], ...] = (
    check_writers_exist,
    check_packages,
    check_local_files,
    check_image_config,
    check_output_outside_overlay,
    check_outputs,
)


def validate(ctx: BuildContext) -> None:
    """Run every check in :data:`CHECKS`; raise the first ComposerError found."""
    for check in CHECKS:
        check(ctx)
