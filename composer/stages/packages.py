"""Verified package downloads, and installing a planned package set into a tree.

Every ``.apk`` must match its index ``C:`` checksum, its own signature and its
``datahash`` before it may enter the cache or the tree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from composer.apk.index import PackageInfo
from composer.apk.install import PackageToFetch, install_packages
from composer.apk.keys import TrustedKeys
from composer.apk.package import VerifiedPackage, verify_apk
from composer.errors import NotFoundError, OfflineError, VerificationError
from composer.manifest import InputRole
from composer.tree import FileTree
from composer.urls import repository_file_url

if TYPE_CHECKING:
    from composer.sources.fetch import Fetcher
    from composer.stages.plan import PackagePlan

PACKAGE_WORKERS = 2
"""Threads that fetch, verify and load packages (two cores: one big package, the rest)."""


@dataclass(frozen=True)
class Installed:
    """What installing a package set did: the database's packages and the scripts not run."""

    packages: tuple[str, ...]
    scripts_not_run: tuple[dict[str, Any], ...]


def fetch_package(fetcher: Fetcher, info: PackageInfo, arch: str, keys: TrustedKeys, *,
                  reuse_cache: bool = True, sha256: str | None = None) -> VerifiedPackage:
    """Download (or reuse from the cache) one .apk, verified before it is stored.

    A download is verified in full before it enters the cache. A cached copy's data
    member is not hashed here (``data_checked`` is False): the installer hashes those
    bytes while it loads them and compares them to the signed ``datahash`` before any
    file is used, so each byte is read and hashed once. ``reuse_cache=False`` fetches
    again, for when a cached copy turned out to be damaged. ``sha256`` (from a lock) pins
    the file's bytes: a cached copy is found by it, a download must have it.
    """
    url = repository_file_url(info.repository, arch, info.filename)
    source = f"{info.repository}"
    verified: dict[str, VerifiedPackage] = {}
    cached: Path | None = None

    def check(path: Path) -> None:
        size = path.stat().st_size
        if info.size is not None and size != info.size:
            raise VerificationError(f"package {info.label} ({source}): {size} bytes, but the "
                                    f"index says {info.size}")
        verified["pkg"] = verify_apk(path, keys, source=source, expected_checksum=info.checksum,
                                     package=info.label, hash_data=path != cached)

    what = f"package {info.label}"
    if sha256 is not None:
        # The cached copy is hashed in full against the pin (a damaged one is dropped and
        # fetched again), so the signature check need not hash its data once more.
        cached = fetcher.cache.path_for(sha256) if reuse_cache else None
        pinned = _fetch_pinned(fetcher, info, url, sha256, what, check)
        return replace(verified["pkg"], _opener=lambda: open(pinned, "rb"))
    record = fetcher.cache.lookup_url(url) if reuse_cache else None
    final: Path | None = None
    if record is not None:
        cached = fetcher.cache.path_for(record.sha256)
    if record is not None and cached is not None:
        try:
            final = fetcher.fetch_blob(url, sha256=record.sha256, size=None, what=what,
                                       check=check, role=InputRole.PACKAGE, rehash=False)
        except VerificationError as exc:
            fetcher.drop_damaged(cached, what=what, why=str(exc))
    if final is None:
        cached = None
        final = fetcher.fetch_blob(url, sha256=None, size=None, what=what, check=check,
                                   max_size=info.size, role=InputRole.PACKAGE)
    # The check ran on the download's temporary file, or on the cached copy; read the
    # data from the cache entry (the loader hashes it against the signed data hash).
    return replace(verified["pkg"], _opener=lambda: open(final, "rb"))


def _fetch_pinned(fetcher: Fetcher, info: PackageInfo, url: str, sha256: str, what: str,
                  check: Callable[[Path], None]) -> Path:
    """A locked package: by its pinned sha256 from the cache, else downloaded and compared."""
    try:
        return fetcher.fetch_blob(url, sha256=sha256, size=info.size, what=what, check=check,
                                  role=InputRole.PACKAGE)
    except NotFoundError as exc:
        from composer.stages.locked import VENDOR_HINT

        raise NotFoundError(f"package {info.label} is locked, but {url} is gone from the "
                            f"mirror; {VENDOR_HINT}") from exc


def download_packages(fetcher: Fetcher,
                      wanted: Sequence[tuple[str, PackageInfo, TrustedKeys, str | None]]) -> None:
    """Fetch and verify packages into the cache without installing them (``fetch``)."""
    with ThreadPoolExecutor(max_workers=PACKAGE_WORKERS) as pool:
        jobs = [pool.submit(fetch_package, fetcher, info, arch, keys, sha256=sha256)
                for arch, info, keys, sha256 in wanted]
        try:
            for job in jobs:
                job.result()
        finally:
            for job in jobs:
                job.cancel()


def _refetcher(fetcher: Fetcher, info: PackageInfo, arch: str, keys: TrustedKeys,
               sha256: str | None = None) -> Callable[[], VerifiedPackage]:
    """Fetch again, verified in full, when a cached copy fails its data hash at load time.
    Offline there is nothing to fetch from: the damaged cache file is removed and named."""
    if not fetcher.settings.offline:
        return lambda: fetch_package(fetcher, info, arch, keys, reuse_cache=False, sha256=sha256)

    def damaged() -> VerifiedPackage:
        url = f"{info.repository}/{arch}/{info.filename}"
        record = fetcher.cache.lookup_url(url)
        cached = fetcher.cache.path_for(record.sha256) if record else None
        what = f"package {info.label}"
        why = "its data does not match the signed data hash"
        if cached is not None:
            fetcher.drop_damaged(cached, what=what, why=why)  # offline: raises
        raise OfflineError(f"{what}: {url}: the cached copy is damaged ({why}); run once "
                           "without --offline to fetch it again")

    return damaged


def install_planned(tree: FileTree, plan: PackagePlan, arch: str, fetcher: Fetcher) -> Installed:
    """Fetch, verify and install the plan's wanted packages into ``tree``.

    Each package is fetched, verified and loaded by one of the installer's threads, the
    largest first; nothing is merged before all of them passed.
    """
    keys = plan.keys
    report = install_packages(
        tree,
        [PackageToFetch(info, fetch=partial(fetch_package, fetcher, info, arch, keys,
                                            sha256=plan.pinned.get(info.name)),
                        refetch=_refetcher(fetcher, info, arch, keys, plan.pinned.get(info.name)))
         for info in plan.wanted],
        world=list(plan.world), arch=arch, keys=dict(plan.key_files), epoch=plan.epoch,
        repositories=[line for s in plan.repositories if (line := s.line) is not None]
        if plan.write_repositories else None, workers=PACKAGE_WORKERS)
    return Installed(
        packages=tuple(f"{p.name}-{p.version}" for p in report.database),
        scripts_not_run=tuple({"package": s.package, "script": s.script,
                               "effects": list(s.effects), "unhandled": list(s.unhandled_lines)}
                              for s in report.scripts))
