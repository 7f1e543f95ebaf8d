"""The one timestamp rule, in order: a rebuild's pinned epoch, SOURCE_DATE_EPOCH, the
profile's source_date_epoch, the newest input."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from composer.stages.epoch import Epoch, choose_epoch, fixed_epoch
from tests.conftest import write_profile
from tests.helpers.gpg import SigningKey
from tests.stages.conftest import ContextFor


def test_cascade(tmp_path: Path, context_for: ContextFor, signing_key: SigningKey) -> None:
    plain = write_profile(tmp_path / "a", mirror_url="file:///m", key=signing_key)
    pinned = write_profile(tmp_path / "b", mirror_url="file:///m", key=signing_key,
                           source_date_epoch=1600000000)
    ctx = context_for(plain)
    assert fixed_epoch(ctx) is None
    assert choose_epoch(ctx, 1234) == Epoch(1234, "inputs")
    ctx = context_for(pinned)
    assert choose_epoch(ctx, 1234) == Epoch(1600000000, "profile")
    ctx = context_for(pinned, env={"SOURCE_DATE_EPOCH": "1500000000"})
    assert choose_epoch(ctx, 1234) == Epoch(1500000000, "environment")
    ctx = replace(ctx, pinned_epoch=(1400000000, "profile"))
    assert choose_epoch(ctx, 1234) == Epoch(1400000000, "profile")
    assert fixed_epoch(ctx) == Epoch(1400000000, "profile")
