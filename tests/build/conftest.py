"""In-process build tests: a BuildContext for a profile, against the file:// test mirror."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from composer.context import BuildContext
from composer.profile import load_profile

ContextFor = Callable[..., BuildContext]


@pytest.fixture
def logs() -> list[str]:
    return []


@pytest.fixture
def context_for(tmp_path: Path, logs: list[str]) -> ContextFor:
    """``context_for(profile_path, **flags)``: a context writing under ``tmp_path``, with
    its own cache, no progress bars, no SOURCE_DATE_EPOCH, and log lines kept in ``logs``;
    ``overrides`` are the profile overrides CLI flags give (``{"mirror": …}``)."""

    def make(profile: Path, *, env: dict[str, str] | None = None,
             overrides: dict[str, Any] | None = None, **flags: Any) -> BuildContext:
        flags.setdefault("output_dir", tmp_path / "out")
        flags.setdefault("cache_dir", tmp_path / "cache")
        return BuildContext.from_environment(load_profile(profile, overrides=overrides),
                                             env=env or {}, progress=False, retries=0,
                                             retry_delay=0.0, log=logs.append, **flags)

    return make
