"""The one timestamp rule: SOURCE_DATE_EPOCH, else the profile's value, else the newest input.

A ``verify --rebuild`` pins the published epoch, which comes before everything. The
fallback is never "now": each step passes the newest timestamp among the inputs it
has seen so far (the base tree, the packages, the composed trees).
"""

from __future__ import annotations

from dataclasses import dataclass

from composer.context import BuildContext


@dataclass(frozen=True)
class Epoch:
    """A timestamp and where it came from (``environment``, ``profile``, ``inputs`` …)."""

    value: int
    source: str


def fixed_epoch(ctx: BuildContext) -> Epoch | None:
    """The epoch set from outside the inputs, when there is one."""
    if ctx.pinned_epoch is not None:
        return Epoch(*ctx.pinned_epoch)
    if ctx.env_epoch is not None:
        return Epoch(ctx.env_epoch, "environment")
    if ctx.profile.source_date_epoch is not None:
        return Epoch(ctx.profile.source_date_epoch, "profile")
    return None


def choose_epoch(ctx: BuildContext, newest_input: int) -> Epoch:
    """The fixed epoch if any, else ``newest_input``."""
    return fixed_epoch(ctx) or Epoch(newest_input, "inputs")
