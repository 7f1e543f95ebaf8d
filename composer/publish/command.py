"""The ``push`` and ``publish`` commands below argparse: settings from flags, then push."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from composer.errors import UsageError
from composer.numbers import parse_decimal
from composer.publish.layout import read_plan
from composer.publish.locations import FILE_NAME, BlobLocations
from composer.publish.push import PushResult, push_plan
from composer.publish.reference import ImageReference, parse_reference
from composer.publish.session import RegistrySettings
from composer.sources.cache import default_cache_dir
from composer.sources.fetch import FetchSettings

_UNITS = {"": 1, "K": 1 << 10, "KI": 1 << 10, "M": 1 << 20, "MI": 1 << 20, "G": 1 << 30, "GI": 1 << 30}
MIN_CHUNK = 64 * 1024


def parse_size(text: str, *, what: str) -> int:
    """``8M``, ``512K``, ``1048576``: a byte count with an optional binary unit."""
    body = text.strip().upper().removesuffix("B")
    digits = body.rstrip("KMGI")
    unit = body[len(digits):]
    number = parse_decimal(digits, max_digits=12)
    if number is None or unit not in _UNITS:
        raise UsageError(f"{what} {text!r}: expected a size such as 8M, 512K or 1048576")
    size = number * _UNITS[unit]
    if size < MIN_CHUNK:
        raise UsageError(f"{what} {text!r}: at least {MIN_CHUNK // 1024}K")
    return size


def parse_references(texts: Sequence[str]) -> list[ImageReference]:
    """Every REF of the command line, parsed before any work starts."""
    if not texts:
        raise UsageError("give at least one image reference (registry.example.org/team/web:1.2)")
    return [parse_reference(t) for t in texts]


def registry_settings(*, env: Mapping[str, str], ca_cert: Path | None, insecure: bool,
                      chunk_size: str | None, retries: int, retry_delay: float, timeout: float,
                      log: Callable[[str], None]) -> RegistrySettings:
    if retries < 0 or retry_delay < 0:
        raise UsageError("--retries and --retry-delay must not be negative")
    if not timeout > 0:
        raise UsageError("--timeout must be a positive number of seconds")
    if insecure and ca_cert is not None:
        raise UsageError("--insecure (plain HTTP) and --ca-cert (TLS) exclude each other")
    network = FetchSettings(connect_timeout=timeout, read_timeout=timeout, retries=retries,
                            backoff=retry_delay, progress=sys.stderr.isatty(), log=log)
    settings = RegistrySettings(network=network, ca_cert=ca_cert, insecure=insecure, env=env)
    if chunk_size is not None:
        settings = RegistrySettings(network=network, ca_cert=ca_cert, insecure=insecure, env=env,
                                    chunk_size=parse_size(chunk_size, what="--chunk-size"))
    return settings


def push_folder(folder: Path, refs: Sequence[ImageReference], settings: RegistrySettings, *,
                cache_dir: Path | None, env: Mapping[str, str]) -> list[PushResult]:
    """Push a build folder (or OCI layout) to every reference."""
    plan = read_plan(folder)
    cache = cache_dir or default_cache_dir(env)
    return push_plan(plan, refs, settings, locations=BlobLocations(cache / FILE_NAME))


def result_lines(results: Sequence[PushResult]) -> list[str]:
    """``sha256:<digest>  REF@sha256:<digest>`` per reference: what to pin."""
    return [f"{r.digest}  {r.reference.pinned(r.digest)}" for r in results]


def result_json(results: Sequence[PushResult]) -> list[dict[str, object]]:
    return [{"reference": r.reference.text, "digest": r.digest,
             "pinned": r.reference.pinned(r.digest), "uploaded": r.uploaded, "mounted": r.mounted,
             "present": r.present, "bytes_uploaded": r.bytes_sent,
             "manifests_sent": r.manifests_sent, "referrers": r.referrers} for r in results]
