"""Bridge from the pipeline to the APK engine: repositories, keys, resolve, fetch, install.

Trust: every APKINDEX must carry a valid signature by a trusted key (the
minirootfs's verified ``/etc/apk/keys`` plus the profile's ``keys:``); every
``.apk`` must match its index ``C:`` checksum, its own signature and its
``datahash`` before it may enter the cache or the tree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from composer.apk import db
from composer.apk.accounts import AccountFiles, GroupSpec, UserSpec, apply_accounts
from composer.apk.depends import Dependency, parse_dependency
from composer.apk.effects import enable_service
from composer.apk.index import FIELD_ORDER, PackageInfo, parse_apkindex
from composer.apk.install import PackageToInstall, install_packages
from composer.apk.keys import TrustedKeys, parse_public_key
from composer.apk.package import VerifiedPackage, verify_apk
from composer.apk.resolver import RepositoryIndex, resolve
from composer.apk.signing import verify_apkindex
from composer.errors import InstallError, ProfileError, VerificationError
from composer.profile.model import Base, PinnedKey, Profile
from composer.tree import EntryType, FileTree

if TYPE_CHECKING:
    from composer.context import BuildContext
    from composer.pipeline import ArchBuild
    from composer.sources.fetch import Fetcher

NAMED_REPOSITORIES = ("main", "community", "testing")
VERIFY_WORKERS = 2
_URL = re.compile(r"^(https?|file)://")


@dataclass(frozen=True)
class RepositorySource:
    """One repository: where its ``<arch>/APKINDEX.tar.gz`` lives and its optional tag."""

    url: str
    tag: str | None

    @property
    def line(self) -> str:
        """The line apk expects in ``/etc/apk/repositories``."""
        return f"@{self.tag} {self.url}" if self.tag else self.url


def require_apk_engine(ctx: BuildContext) -> None:
    """Check the package-related profile fields that can be checked before any download."""
    profile = ctx.profile
    repository_sources(profile, profile.branch)
    world_constraints(profile, [])
    if profile.base == Base.PACKAGES and not profile.keys:
        raise ProfileError(f"{ctx.loaded.path}: keys: base: packages needs the repositories' "
                           "signing keys (there is no minirootfs to take /etc/apk/keys from)")


def repository_sources(profile: Profile, branch: str) -> list[RepositorySource]:
    """The profile's repositories in priority order (default: the branch's main and community)."""
    repos = profile.repositories
    if repos is None:
        names: list[tuple[str, str | None]] = [("main", None), ("community", None)]
    else:
        names = [(r.url, r.tag) for r in repos]
    sources = []
    for name, tag in names:
        if _URL.match(name):
            sources.append(RepositorySource(url=name.rstrip("/"), tag=tag))
        elif name in NAMED_REPOSITORIES:
            if name == "testing" and branch != "edge":
                raise ProfileError(f"repositories: 'testing' exists only on edge (branch is {branch})")
            sources.append(RepositorySource(url=f"{profile.mirror}/{branch}/{name}", tag=tag))
        else:
            raise ProfileError(f"repositories: {name!r} is neither one of "
                               f"{', '.join(NAMED_REPOSITORIES)} nor an http(s):// or file:// URL")
    return sources


def world_constraints(profile: Profile, base_world: Sequence[str]) -> list[Dependency]:
    """The base world (from the minirootfs) plus the profile's packages, in that order."""
    world: list[Dependency] = []
    seen: set[str] = set()
    for text, source in [*[(w, "/etc/apk/world") for w in base_world],
                         *[(p, "profile packages") for p in profile.packages]]:
        dep = parse_dependency(text, source=source, error_cls=ProfileError, strict=True)
        key = dep.format()
        if key not in seen:
            seen.add(key)
            world.append(dep)
    return world


def repository_branch(profile: Profile, release: str | None) -> str:
    """``latest-stable`` becomes the release's ``vX.Y``, so indexes match the minirootfs."""
    if profile.branch == "latest-stable" and release:
        match = re.match(r"^(\d+)\.(\d+)", release)
        if match:
            return f"v{match.group(1)}.{match.group(2)}"
    return profile.branch


def trusted_keys(ctx: BuildContext, fetcher: Fetcher,
                 tree: FileTree) -> tuple[TrustedKeys, dict[str, bytes]]:
    """Keys from the verified base tree plus the profile's own (sha256-pinned when given)."""
    profile = ctx.profile
    keys = TrustedKeys.from_tree(tree, "etc/apk/keys", source="minirootfs") \
        if profile.base == Base.MINIROOTFS else TrustedKeys()
    files = {name: keys.key(name).data for name in keys}
    extra = []
    for ref in profile.keys:
        file_ref, pin = (ref.file, ref.sha256) if isinstance(ref, PinnedKey) else (ref, None)
        url = file_ref if _URL.match(file_ref) else ctx.loaded.resolve(file_ref).as_uri()
        data = fetcher.fetch_metadata(url, what=f"keys: {file_ref}", max_size=64 * 1024)
        name = file_ref.rsplit("/", 1)[-1]
        if pin is not None:
            from composer.apk.keys import check_pinned_sha256

            check_pinned_sha256(name, data, pin, source=f"{ctx.loaded.path}: keys")
        extra.append(parse_public_key(name, data, source=f"{ctx.loaded.path}: keys"))
        files[name] = data
    if extra:
        keys = keys.merged(TrustedKeys(extra))
    if not len(keys):
        raise VerificationError(f"{ctx.loaded.path}: no trusted package signing keys "
                                "(the minirootfs has no /etc/apk/keys and the profile names none)")
    return keys, files


def fetch_indexes(fetcher: Fetcher, sources: Sequence[RepositorySource], arch: str,
                  keys: TrustedKeys) -> list[RepositoryIndex]:
    indexes = []
    for source in sources:
        url = f"{source.url}/{arch}/APKINDEX.tar.gz"
        data = fetcher.fetch_metadata(url, what=f"repository {source.url} index", check=lambda raw: verify_apkindex(raw, keys, source=url))  # noqa: B023, E501
        verified = verify_apkindex(data, keys, source=url)
        parsed = parse_apkindex(verified.text, source=url, description=verified.description,
                                repository=source.url, tag=source.tag)
        indexes.append(RepositoryIndex(name=source.url, tag=source.tag, packages=parsed.packages))
    return indexes


def installed_as_index(tree: FileTree) -> tuple[list[db.InstalledPackage], list[PackageInfo]]:
    """The tree's installed database, also as index records for the resolver."""
    entry = tree.get(db.INSTALLED_PATH)
    if entry is None or entry.blob is None:
        return [], []
    data = entry.blob.read()
    records = db.parse_installed(data, source="/" + db.INSTALLED_PATH)
    header = b"\n".join(line for line in data.split(b"\n")
                        if not line or (len(line) > 1 and line[1:2] == b":"
                                        and chr(line[0]) in FIELD_ORDER))
    infos = parse_apkindex(header + b"\n", source="/" + db.INSTALLED_PATH).packages
    return records, list(infos)


def fetch_package(fetcher: Fetcher, info: PackageInfo, arch: str, keys: TrustedKeys, *,
                  reuse_cache: bool = True) -> VerifiedPackage:
    """Download (or reuse from the cache) one .apk, verified before it is stored.

    A download is verified in full before it enters the cache. A cached copy's data
    member is not hashed here (``data_checked`` is False): the installer hashes those
    bytes while it loads them and compares them to the signed ``datahash`` before any
    file is used, so each byte is read and hashed once. ``reuse_cache=False`` fetches
    again, for when a cached copy turned out to be damaged.
    """
    url = f"{info.repository}/{arch}/{info.filename}"
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
    record = fetcher.cache.lookup_url(url) if reuse_cache else None
    final: Path | None = None
    if record is not None:
        cached = fetcher.cache.path_for(record.sha256)
    if record is not None and cached is not None:
        try:
            final = fetcher.fetch_blob(url, sha256=record.sha256, size=None, what=what,
                                       check=check)
        except VerificationError:
            if fetcher.settings.offline:
                raise
    if final is None:
        cached = None
        final = fetcher.fetch_blob(url, sha256=None, size=None, what=what, check=check,
                                   max_size=info.size)
    # The check ran on the download's temporary file, or on the cached copy; read the
    # data from the cache entry (the loader hashes it against the signed data hash).
    return replace(verified["pkg"], _opener=lambda: open(final, "rb"))


def _refetcher(fetcher: Fetcher, info: PackageInfo, arch: str,
               keys: TrustedKeys) -> Callable[[], VerifiedPackage] | None:
    """Fetch again, verified in full, when a cached copy fails its data hash at load time
    (offline there is nothing else to fetch from)."""
    if fetcher.settings.offline:
        return None
    return lambda: fetch_package(fetcher, info, arch, keys, reuse_cache=False)


def _script_reports(report: Any) -> list[dict[str, Any]]:
    return [{"package": s.package, "script": s.script, "effects": list(s.effects),
             "unhandled": list(s.unhandled_lines)} for s in report.scripts]


def install_profile_packages(ctx: BuildContext, fetcher: Fetcher, build: ArchBuild) -> None:
    """Resolve the world, fetch and verify each package, install them into the build's tree."""
    profile = ctx.profile
    tree = build.tree
    arch = build.arch
    branch = repository_branch(profile, build.release if build.minirootfs else profile.release)
    sources = repository_sources(profile, branch)
    keys, key_files = trusted_keys(ctx, fetcher, tree)
    ctx.log(f"==> {profile.name} ({arch}): reading {len(sources)} repository index(es)")
    indexes = fetch_indexes(fetcher, sources, arch, keys)
    base_world: list[str] = []
    world_entry = tree.get("etc/apk/world")
    if world_entry is not None and world_entry.blob is not None:
        base_world = db.parse_world(world_entry.blob.read())
    world = world_constraints(profile, base_world)
    records, installed = installed_as_index(tree)
    resolution = resolve(world, indexes, installed=installed, arch=arch)
    have = {r.name: r.checksum for r in records}
    wanted = [p for p in resolution.packages if have.get(p.name) != p.checksum]
    ctx.log(f"==> {profile.name} ({arch}): installing {len(wanted)} package(s)")
    epoch = install_epoch(ctx, tree, resolution.packages)
    write_repositories = profile.repositories is not None or profile.base == Base.PACKAGES
    # Verify on both cores, in order; each package starts loading as soon as it is
    # verified, while later ones are still being checked.
    with ThreadPoolExecutor(max_workers=VERIFY_WORKERS) as pool:
        verifying = [pool.submit(fetch_package, fetcher, info, arch, keys) for info in wanted]
        try:
            to_install = (PackageToInstall(job.result(), info,
                                           refetch=_refetcher(fetcher, info, arch, keys))
                          for job, info in zip(verifying, wanted, strict=True))
            report = install_packages(
                tree, to_install, world=[d.format() for d in world], arch=arch,
                keys=key_files, epoch=epoch,
                repositories=[s.line for s in sources] if write_repositories else None)
        finally:
            for job in verifying:
                job.cancel()
    build.packages = tuple(f"{p.name}-{p.version}" for p in report.database)
    build.scripts_not_run.extend(_script_reports(report))
    if profile.base == Base.PACKAGES:
        build.release = release_from_tree(tree) or profile.release or profile.branch


def install_epoch(ctx: BuildContext, tree: FileTree, packages: Sequence[PackageInfo]) -> int:
    """The timestamp files written by the installer carry (shadow dates too): never "now"."""
    if ctx.pinned_epoch is not None:
        return ctx.pinned_epoch[0]
    if ctx.env_epoch is not None:
        return ctx.env_epoch
    if ctx.profile.source_date_epoch is not None:
        return ctx.profile.source_date_epoch
    newest = max((p.build_time or 0 for p in packages), default=0)
    return max(newest, max((e.mtime for e in tree.entries.values()), default=0))


def release_from_tree(tree: FileTree) -> str | None:
    entry = tree.get("etc/alpine-release")
    if entry is None or entry.type != EntryType.FILE or entry.blob is None:
        return None
    text = entry.blob.read().decode("utf-8", "replace").strip()
    return text if re.fullmatch(r"[0-9][0-9A-Za-z._-]*", text) else None


def configure_system(ctx: BuildContext, build: ArchBuild, epoch_hint: int) -> list[str]:
    """The profile's accounts and OpenRC services, applied after packages, before the overlay."""
    profile = ctx.profile
    done: list[str] = []
    accounts = profile.accounts
    if accounts.groups or accounts.users:
        # Profile accounts are ordinary ones: ids from 1000, a user-private group by default,
        # as busybox adduser does without -S.
        groups = [GroupSpec(name=g.name, gid=g.gid, system=False) for g in accounts.groups]
        users = [UserSpec(name=u.name, uid=u.uid, group=u.group, home=u.home, shell=u.shell,
                          gecos=u.gecos, system=False) for u in accounts.users]
        try:
            done.extend(apply_accounts(build.tree, groups, users, epoch=epoch_hint))
            files = AccountFiles(build.tree, epoch=epoch_hint)
            for user in accounts.users:
                for group in user.groups:
                    if files.group(group) is None:
                        raise InstallError(f"user {user.name} lists group {group!r}, "
                                           "which does not exist")
                    if files.add_member(user.name, group):
                        done.append(f"user {user.name} added to group {group}")
            files.save(mtime=epoch_hint)
        except InstallError as exc:
            raise InstallError(f"{ctx.loaded.path}: accounts: {exc}") from None
    for runlevel, names in sorted(profile.services.items()):
        for name in names:
            link = enable_service(build.tree, name, runlevel, mtime=epoch_hint)
            done.append(f"service {name} enabled in {runlevel} (/{link})")
    return done
