"""Where packages come from and who may sign them: repositories, world, keys, indexes.

Trust: every APKINDEX must carry a valid signature by a trusted key (the
minirootfs's verified ``/etc/apk/keys`` plus the profile's ``keys:``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from composer.apk.depends import Dependency, parse_dependency
from composer.apk.index import parse_apkindex
from composer.apk.keys import TrustedKeys, check_pinned_sha256, parse_public_key
from composer.apk.resolver import RepositoryIndex
from composer.apk.signing import verify_apkindex
from composer.errors import ProfileError, VerificationError
from composer.manifest import InputRole
from composer.profile.load import LoadedProfile
from composer.profile.model import PinnedKey, Profile
from composer.urls import is_url, mirror_url, rebase_url, repository_file_url

if TYPE_CHECKING:
    from composer.sources.fetch import Fetcher

NAMED_REPOSITORIES = ("main", "community", "testing")
KEY_MAX_SIZE = 64 * 1024


@dataclass(frozen=True)
class RepositorySource:
    """One repository: where its ``<arch>/APKINDEX.tar.gz`` is fetched from (``url``), what
    the image names it (``image_url``: under the profile's ``image_mirror``, not the build
    mirror) and its optional tag."""

    url: str
    image_url: str
    tag: str | None

    @property
    def line(self) -> str:
        """The line apk expects in the image's ``/etc/apk/repositories``."""
        return f"@{self.tag} {self.image_url}" if self.tag else self.image_url

    def index_url(self, arch: str) -> str:
        return repository_file_url(self.url, arch, "APKINDEX.tar.gz")


@dataclass(frozen=True)
class PackageKeys:
    """The keys packages and indexes are checked against, and the key files to install."""

    trusted: TrustedKeys
    files: Mapping[str, bytes]


def repository_sources(profile: Profile, branch: str) -> list[RepositorySource]:
    """The profile's repositories in priority order (default: the branch's main and community).

    'testing' on a branch other than edge is refused when the profile is loaded.
    """
    repos = profile.repositories
    if repos is None:
        names: list[tuple[str, str | None]] = [("main", None), ("community", None)]
    else:
        names = [(r.url, r.tag) for r in repos]
    sources = []
    for name, tag in names:
        if is_url(name):
            url = name.rstrip("/")
        elif name in NAMED_REPOSITORIES:
            url = mirror_url(profile.mirror, branch, name)
        else:
            raise ProfileError(f"repositories: {name!r} is neither one of "
                               f"{', '.join(NAMED_REPOSITORIES)} nor an http(s):// or file:// URL")
        image_url = rebase_url(url, profile.mirror, profile.image_mirror)
        sources.append(RepositorySource(url=url, image_url=image_url, tag=tag))
    return sources


def world_constraints(requested: Sequence[str], base_world: Sequence[str], *,
                      source: str = "profile packages") -> list[Dependency]:
    """The base world (from the minirootfs) plus the requested packages, in that order;
    ``source`` names where the requested ones were written, for errors."""
    world: list[Dependency] = []
    seen: set[str] = set()
    for text, where in [*[(w, "/etc/apk/world") for w in base_world],
                        *[(p, source) for p in requested]]:
        dep = parse_dependency(text, source=where, error_cls=ProfileError, strict=True)
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


def fetch_package_keys(loaded: LoadedProfile, fetcher: Fetcher, base_keys: TrustedKeys, *,
                       pinned: Mapping[str, str] | None = None,
                       mirror_copy: Callable[[str], str] | None = None) -> PackageKeys:
    """The base tree's keys plus the profile's own (sha256-pinned when given).

    A locked build passes ``pinned`` (key file name → the sha256 the lock recorded) and
    ``mirror_copy`` (a key's name → where a vendored mirror keeps it): each key must then
    have exactly the locked bytes, and a key named by URL is also looked for on the mirror.
    """
    keys = base_keys
    files = {name: keys.key(name).data for name in keys}
    extra = []
    for ref in loaded.profile.keys:
        file_ref, pin = (ref.file, ref.sha256) if isinstance(ref, PinnedKey) else (ref, None)
        url = file_ref if is_url(file_ref) else loaded.resolve(file_ref).as_uri()
        name = file_ref.rsplit("/", 1)[-1]
        what = f"keys: {file_ref}"
        locked = (pinned or {}).get(name)
        if pinned is not None and locked is None:
            raise VerificationError(f"{loaded.path}: keys: {file_ref} is not in the lock (the "
                                    "profile changed since locking; run `alpine-composer lock "
                                    "--update`)")
        if locked is not None:
            urls = [mirror_copy(name), url] if mirror_copy is not None and is_url(file_ref) \
                else [url]
            path = fetcher.fetch_pinned(urls, sha256=locked, size=None, what=what,
                                        max_size=KEY_MAX_SIZE)
            data = path.read_bytes()
        else:
            data = fetcher.fetch_metadata(url, what=what, max_size=KEY_MAX_SIZE)
        if pin is not None:
            check_pinned_sha256(name, data, pin, source=f"{loaded.path}: keys")
        extra.append(parse_public_key(name, data, source=f"{loaded.path}: keys"))
        files[name] = data
    if extra:
        keys = keys.merged(TrustedKeys(extra))
    if not len(keys):
        raise VerificationError(f"{loaded.path}: no trusted package signing keys "
                                "(the minirootfs has no /etc/apk/keys and the profile names none)")
    return PackageKeys(trusted=keys, files=files)


@dataclass(frozen=True)
class LoadedIndex:
    """A repository's verified, parsed index and the facts a lock records about it."""

    source: RepositorySource
    url: str
    sha256: str
    size: int
    signer: str
    index: RepositoryIndex


def read_index(data: bytes, source: RepositorySource, url: str, keys: TrustedKeys) -> LoadedIndex:
    """Verify and parse index bytes fetched from ``url``."""
    verified = verify_apkindex(data, keys, source=url)
    parsed = parse_apkindex(verified.chunks, source=url, description=verified.description,
                            repository=source.url, tag=source.tag)
    return LoadedIndex(source=source, url=url, sha256=hashlib.sha256(data).hexdigest(),
                       size=len(data), signer=verified.signer,
                       index=RepositoryIndex(name=source.url, tag=source.tag,
                                             packages=parsed.packages))


def fetch_indexes(fetcher: Fetcher, sources: Sequence[RepositorySource], arch: str,
                  keys: TrustedKeys) -> list[LoadedIndex]:
    """Each repository's signed index, verified and parsed before it enters the cache."""
    indexes = []
    for source in sources:
        url = source.index_url(arch)
        read: list[LoadedIndex] = []
        data = fetcher.fetch_metadata(
            url, what=f"repository {source.url} index", role=InputRole.INDEX,
            check=lambda raw: read.append(read_index(raw, source, url, keys)))  # noqa: B023
        indexes.append(read[0] if read else read_index(data, source, url, keys))
    return indexes

