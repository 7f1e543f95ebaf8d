"""The base image: the verified release key and minirootfs, and what its tree already holds.

``base: minirootfs`` starts from Alpine's verified tarball; ``base: packages`` from an
empty tree. :func:`read_base` reads (never changes) the facts the plan needs from it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from composer.archive import load_tar
from composer.context import BuildContext
from composer.manifest import InputRole
from composer.profile.model import Base
from composer.tree import EntryType, FileTree
from composer.urls import is_url, mirror_file

if TYPE_CHECKING:
    # The APK engine loads only for builds with packages: a minirootfs build never needs it.
    from composer.apk import db
    from composer.apk.index import PackageInfo
    from composer.apk.keys import TrustedKeys
    from composer.sources.fetch import Fetcher
    from composer.sources.minirootfs import VerifiedMinirootfs
    from composer.sources.trust import ReleaseKey

WORLD_PATH = "etc/apk/world"
RELEASE_PATH = "etc/alpine-release"
KEYS_DIR = "etc/apk/keys"


@dataclass(frozen=True)
class BaseFacts:
    """What a base tree already holds, as the resolver and the installer need it."""

    world: tuple[str, ...]
    installed: tuple[db.InstalledPackage, ...]
    installed_index: tuple[PackageInfo, ...]
    keys: TrustedKeys
    newest_mtime: int


def fetch_release_key(ctx: BuildContext, fetcher: Fetcher) -> ReleaseKey | None:
    """The pinned release key; not needed when the rootfs is built from packages alone."""
    if ctx.profile.base == Base.PACKAGES:
        return None
    from composer.sources.minirootfs import fetch_release_key as fetch_key

    trust = ctx.profile.trust
    locked = ctx.lock.release_key if ctx.lock is not None else None
    if locked is not None:
        from composer.sources.trust import load_release_key

        data = fetch_locked_key(ctx, fetcher, locked.name, locked.sha256, trust.key,
                                what="release signing key", role=InputRole.RELEASE_KEY)
        return load_release_key(data, fingerprint=trust.fingerprint, source=trust.key)
    return fetch_key(fetcher, key_ref=trust.key, base_dir=ctx.loaded.base_dir,
                     fingerprint=trust.fingerprint)


VENDORED_KEYS = "keys"
"""Where a vendored mirror keeps the keys a profile names by URL (``<mirror>/keys/<name>``)."""


def fetch_locked_key(ctx: BuildContext, fetcher: Fetcher, name: str, sha256: str, ref: str, *,
                     what: str, role: InputRole = InputRole.METADATA) -> bytes:
    """A key file with the bytes the lock pins: from the cache, else (for a key named by URL)
    the mirror's vendored copy, else where the profile names it."""
    if is_url(ref):
        urls = [mirror_file(ctx.profile.mirror, f"{VENDORED_KEYS}/{name}"), ref]
    else:
        urls = [ctx.loaded.resolve(ref).as_uri()]
    return fetcher.fetch_pinned(urls, sha256=sha256, size=None, what=what, max_size=1 << 20,
                                role=role).read_bytes()


class ReleaseKeySource:
    """The pinned release key, fetched on first use: a release accepted without a signature
    (``trust.allow_unsigned``) never needs it, so such a build works offline without it."""

    def __init__(self, ctx: BuildContext, fetcher: Fetcher) -> None:
        self._ctx = ctx
        self._fetcher = fetcher
        self.key: ReleaseKey | None = None

    def __call__(self) -> ReleaseKey:
        if self.key is None:
            self.key = fetch_release_key(self._ctx, self._fetcher)
            assert self.key is not None
        return self.key


def fetch_base(ctx: BuildContext, fetcher: Fetcher, key: ReleaseKey | ReleaseKeySource | None,
               arch: str) -> VerifiedMinirootfs | None:
    """Download and verify one architecture's minirootfs (None for ``base: packages``)."""
    profile = ctx.profile
    if profile.base != Base.MINIROOTFS:
        return None
    assert key is not None
    from composer.sources.minirootfs import fetch_minirootfs

    ctx.log(f"==> {profile.name} ({arch}): fetching the minirootfs")
    locked = ctx.lock.arch(arch) if ctx.lock is not None else None
    if locked is not None and locked.minirootfs is not None:
        from composer.sources.minirootfs import fetch_locked_minirootfs

        return fetch_locked_minirootfs(fetcher, mirror=profile.mirror, locked=locked.minirootfs,
                                       key=key, allow_unsigned=profile.trust.allow_unsigned,
                                       log=ctx.log)
    return fetch_minirootfs(fetcher, mirror=profile.mirror, branch=profile.branch, arch=arch,
                            release=ctx.pinned_release.get(arch) or profile.release, key=key,
                            allow_unsigned=profile.trust.allow_unsigned, log=ctx.log)


def load_base_tree(mini: VerifiedMinirootfs | None) -> FileTree:
    """A new tree holding the verified minirootfs (empty for ``base: packages``)."""
    tree = FileTree()
    if mini is None:
        return tree
    try:
        with open(mini.path, "rb") as fh:
            load_tar(fh, tree, source=os.path.basename(mini.url))
    except BaseException:
        tree.close()
        raise
    return tree


def read_base(tree: FileTree, *, trust_tree_keys: bool) -> BaseFacts:
    """The base tree's world, installed database and (when trusted) ``/etc/apk/keys``."""
    from composer.apk import db
    from composer.apk.keys import TrustedKeys

    world: list[str] = []
    entry = tree.get(WORLD_PATH)
    if entry is not None and entry.blob is not None:
        world = db.parse_world(entry.blob.read())
    installed, index = _installed(tree)
    keys = TrustedKeys.from_tree(tree, KEYS_DIR, source="minirootfs") if trust_tree_keys \
        else TrustedKeys()
    return BaseFacts(world=tuple(world), installed=tuple(installed), installed_index=tuple(index),
                     keys=keys, newest_mtime=newest_mtime(tree))


def newest_mtime(tree: FileTree) -> int:
    return max((e.mtime for e in tree.entries.values()), default=0)


def _installed(tree: FileTree) -> tuple[list[db.InstalledPackage], list[PackageInfo]]:
    """The tree's installed database, also as index records for the resolver."""
    from composer.apk import db
    from composer.apk.index import FIELD_ORDER, parse_apkindex

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


def release_from_tree(tree: FileTree) -> str | None:
    """``/etc/alpine-release`` when it holds a version, for ``base: packages`` builds."""
    entry = tree.get(RELEASE_PATH)
    if entry is None or entry.type != EntryType.FILE or entry.blob is None:
        return None
    text = entry.blob.read().decode("utf-8", "replace").strip()
    return text if re.fullmatch(r"[0-9][0-9A-Za-z._-]*", text) else None
