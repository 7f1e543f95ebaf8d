"""BuildContext: the profile plus everything about this run (dirs, flags, epoch source).

This is the only module that reads the process environment; SOURCE_DATE_EPOCH is
read here once and passed down explicitly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from composer import __version__
from composer.errors import UsageError
from composer.lockfile import LockFile
from composer.profile import LoadedProfile, Profile
from composer.sources.cache import default_cache_dir

SIGNING_PASSPHRASE_ENV = "ALPINE_COMPOSER_SIGNING_PASSPHRASE"
"""Where ``build --sign`` finds a protected key's passphrase (never on the command line)."""


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_source_date_epoch(value: str | None) -> int | None:
    """SOURCE_DATE_EPOCH as an int; a malformed value is an error, never guessed around."""
    if value is None or value == "":
        return None
    text = value.strip()
    if not text.isdigit():
        raise UsageError(f"SOURCE_DATE_EPOCH={value!r} is not a whole number of seconds since 1970")
    epoch = int(text)
    if epoch >= 2**33:
        raise UsageError(f"SOURCE_DATE_EPOCH={value!r} is out of range for tar headers")
    return epoch


@dataclass(frozen=True)
class BuildContext:
    """Everything one build needs besides the profile's own content."""

    loaded: LoadedProfile
    output_dir: Path
    cache_dir: Path
    offline: bool = False
    progress: bool = False
    env_epoch: int | None = None
    retries: int = 4
    retry_delay: float = 0.5
    timeout: float = 10.0
    allow_host_paths: bool = False
    pinned_release: dict[str, str] = field(default_factory=dict)
    pinned_epoch: tuple[int, str] | None = None
    log: Callable[[str], None] = _stderr_log
    tool_version: str = __version__
    lock: LockFile | None = None
    """The lock the plan is loaded from (None: resolve against the mirror)."""
    lock_path: Path | None = None
    lock_strict: bool = True
    """False for ``verify --rebuild``: a profile changed since its build is reported by the
    comparison (what it changes in the outputs), not refused."""
    sign_key: Path | None = None
    """``build --sign``: the OpenPGP secret key file SHA256SUMS is signed with."""
    sign_passphrase: str | None = field(default=None, repr=False)

    @classmethod
    def from_environment(cls, loaded: LoadedProfile, *, env: Mapping[str, str],
                         output_dir: Path | None, cache_dir: Path | None, offline: bool = False,
                         progress: bool | None = None,
                         retries: int = 4, retry_delay: float = 0.5, timeout: float = 10.0,
                         allow_host_paths: bool = False,
                         log: Callable[[str], None] = _stderr_log) -> BuildContext:
        return cls(
            loaded=loaded,
            output_dir=Path(output_dir) if output_dir else Path("out"),
            cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(env),
            offline=offline,
            retries=retries,
            retry_delay=retry_delay,
            timeout=timeout,
            allow_host_paths=allow_host_paths,
            progress=sys.stderr.isatty() if progress is None else progress,
            env_epoch=parse_source_date_epoch(env.get("SOURCE_DATE_EPOCH")),
            log=log,
            sign_passphrase=env.get(SIGNING_PASSPHRASE_ENV) or None,
        )

    @property
    def profile(self) -> Profile:
        return self.loaded.profile
