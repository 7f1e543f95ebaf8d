"""Bridge from the pipeline to the APK engine (packages, repositories, keys)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from composer.errors import NotSupportedError

if TYPE_CHECKING:
    from composer.context import BuildContext


def require_apk_engine(ctx: BuildContext) -> None:
    raise NotSupportedError(
        f"{ctx.loaded.path}: packages: installing packages needs the APK engine, which this "
        "version of alpine-composer does not have yet; remove 'packages' (and 'base: packages')")
