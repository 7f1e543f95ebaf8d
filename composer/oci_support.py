"""Bridge from the pipeline to the OCI, archive and SBOM writers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from composer.errors import NotSupportedError

if TYPE_CHECKING:
    from composer.context import BuildContext


def require_image_writers(ctx: BuildContext) -> None:
    raise NotSupportedError(f"{ctx.loaded.path}: outputs: OCI image outputs are not available yet")
