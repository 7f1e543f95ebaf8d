"""One validation pass over the profile and its outputs, before any download or write.

Pure and offline: it reads only the loaded profile, so every profile error is found
in well under a second. Checks run in this order (the first failure is reported):

1. every output format has a writer in this version (``outputs.NOT_YET`` names those
   that do not);
2. package rules: repository names and URLs, the world's constraints, and
   ``base: packages`` needing ``keys:``;
3. each output kind's own check (e.g. docker-archive holds one platform), and no two
   outputs claiming the same place (a format listed twice, two tars with one
   compression).

Rules the profile model enforces at load time (branch form, arch list, 'testing' only on
edge, ``base: packages`` needing packages) are not repeated here.
"""

from __future__ import annotations

from collections.abc import Callable

from composer.build.outputs import check_outputs, output_kind
from composer.context import BuildContext
from composer.errors import ProfileError
from composer.profile.model import Base


def check_writers_exist(ctx: BuildContext) -> None:
    for output in ctx.profile.outputs:
        output_kind(ctx, output.format)


def check_packages(ctx: BuildContext) -> None:
    profile = ctx.profile
    if not (profile.packages or profile.base == Base.PACKAGES):
        return
    from composer.build.repositories import repository_sources, world_constraints

    repository_sources(profile, profile.branch)
    world_constraints(profile.packages, [])
    if profile.base == Base.PACKAGES and not profile.keys:
        raise ProfileError(f"{ctx.loaded.path}: keys: base: packages needs the repositories' "
                           "signing keys (there is no minirootfs to take /etc/apk/keys from)")


CHECKS: tuple[Callable[[BuildContext], None], ...] = (
    check_writers_exist,
    check_packages,
    check_outputs,
)


def validate(ctx: BuildContext) -> None:
    """Run every check in :data:`CHECKS`; raise the first ComposerError found."""
    for check in CHECKS:
        check(ctx)
