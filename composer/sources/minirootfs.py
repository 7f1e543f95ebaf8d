"""Find, download and verify an Alpine minirootfs release tarball.

Trust chain: ``latest-releases.yaml`` and ``<file>.sha256`` (unsigned, must
agree) pin the digest; the download must match it; the ``.asc`` detached
signature must verify against the pinned release key. The signature is
checked on the downloaded temp file, so a tarball that fails it never enters
the cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from composer.errors import NotFoundError, VerificationError
from composer.lockfile import LockedMinirootfs
from composer.manifest import InputRole
from composer.sources.fetch import Fetcher
from composer.sources.releases import (
    MAX_RELEASES_BYTES,
    ReleaseImage,
    parse_checksum_file,
    parse_latest_releases,
    release_file_name,
    select_release,
)
from composer.sources.trust import ReleaseKey, load_release_key, verify_detached
from composer.urls import is_url, mirror_file, mirror_url

MINIROOTFS_FLAVOR = "alpine-minirootfs"


@dataclass(frozen=True)
class VerifiedMinirootfs:
    """A minirootfs tarball in the cache that passed every check."""

    path: Path
    url: str
    version: str
    size: int
    sha256: str
    signed_by: str | None
    release_url: str | None
    sha512: str | None = None
    signature_url: str | None = None


def release_dir_url(mirror: str, branch: str, arch: str) -> str:
    """``<mirror>/<branch>/releases/<arch>/`` (with trailing slash)."""
    return mirror_url(mirror, branch, "releases", arch) + "/"


def fetch_minirootfs(
    fetcher: Fetcher,
    *,
    mirror: str,
    branch: str,
    arch: str,
    release: str | None,
    key: ReleaseKey | Callable[[], ReleaseKey],
    allow_unsigned: bool,
    log: Callable[[str], None],
) -> VerifiedMinirootfs:
    """Download the newest (or the pinned ``release``) minirootfs and verify it.

    ``key`` may be a function that fetches the release key: it is called only when the
    release has a signature to check.
    """
    base = release_dir_url(mirror, branch, arch)
    yaml_url = base + "latest-releases.yaml"
    image = _find_image(fetcher, yaml_url, branch=branch, arch=arch, release=release)
    if image is None:
        assert release is not None
        file = release_file_name(flavor=MINIROOTFS_FLAVOR, version=release, arch=arch)
        version, size, yaml_sha256, release_url, sha512 = release, None, None, None, None
        log(f"{branch}/{arch}: {release} is not in latest-releases.yaml; using {file} directly")
    else:
        file, version, size, yaml_sha256 = image.file, image.version, image.size, image.sha256
        release_url, sha512 = yaml_url, image.sha512
    tarball_url = base + file
    what = f"minirootfs {file}"

    sha256 = _checksum(fetcher, tarball_url, file=file, yaml_sha256=yaml_sha256, what=what)
    signature = _signature(fetcher, tarball_url, what=what, allow_unsigned=allow_unsigned)
    if signature is None:
        log(
            f"WARNING: {what} from {tarball_url} is accepted WITHOUT a signature "
            "(trust.allow_unsigned is set); only its unsigned sha256 was checked"
        )
    signers: list[str] = []

    def check_signature(candidate: Path) -> None:
        if signature is not None:
            release_key = key() if callable(key) else key
            signers.append(verify_detached(candidate, signature, release_key, what=what))

    path = fetcher.fetch_blob(
        tarball_url, sha256=sha256, size=size, what=what, check=check_signature, role=InputRole.MINIROOTFS
    )
    signed_by = signers[-1] if signers else None
    if sha512 is not None:
        _check_sha512(path, sha512, what=f"{what}: {tarball_url}", source=yaml_url)
    return VerifiedMinirootfs(
        path=path,
        url=tarball_url,
        version=version,
        size=path.stat().st_size,
        sha256=sha256,
        signed_by=signed_by,
        release_url=release_url,
        sha512=sha512,
        signature_url=tarball_url + ".asc" if signature is not None else None,
    )


def _check_sha512(path: Path, sha512: str, *, what: str, source: str) -> None:
    digest = hashlib.sha512()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != sha512:
        raise VerificationError(f"{what}: sha512 {digest.hexdigest()} does not match the "
                                f"{sha512} that {source} publishes")


def fetch_locked_minirootfs(
    fetcher: Fetcher,
    *,
    mirror: str,
    locked: LockedMinirootfs,
    key: ReleaseKey | Callable[[], ReleaseKey],
    allow_unsigned: bool,
    log: Callable[[str], None],
) -> VerifiedMinirootfs:
    """The minirootfs a lock names, by its path under ``mirror``: the sha256 and size it
    pins and, when it was signed, its detached signature (pinned too) checked again."""
    url = mirror_file(mirror, locked.path)
    name = locked.path.rsplit("/", 1)[-1]
    what = f"minirootfs {name}"
    signature: bytes | None = None
    if locked.signature is not None:
        sig_url = mirror_file(mirror, locked.signature.path)
        signature = _locked_file(fetcher, sig_url, locked.signature.sha256, what=f"{what} signature",
                                 role=InputRole.SIGNATURE).read_bytes()
    elif not allow_unsigned:
        raise VerificationError(f"{what}: the lock records no signature, but the profile does not "
                                "set trust.allow_unsigned")
    else:
        log(f"WARNING: {what} is accepted WITHOUT a signature (trust.allow_unsigned is set); "
            "only the sha256 the lock pins was checked")
    signers: list[str] = []

    def check_signature(candidate: Path) -> None:
        if signature is not None:
            release_key = key() if callable(key) else key
            signers.append(verify_detached(candidate, signature, release_key, what=what))

    path = _locked_file(fetcher, url, locked.sha256, size=locked.size, what=what,
                        check=check_signature, role=InputRole.MINIROOTFS)
    return VerifiedMinirootfs(
        path=path, url=url, version=locked.release, size=path.stat().st_size,
        sha256=locked.sha256, signed_by=signers[-1] if signers else None, release_url=None,
        sha512=locked.sha512, signature_url=mirror_file(mirror, locked.signature.path)
        if locked.signature is not None else None)


def _locked_file(fetcher: Fetcher, url: str, sha256: str, *, what: str, role: InputRole,
                 size: int | None = None, check: Callable[[Path], None] | None = None) -> Path:
    try:
        return fetcher.fetch_blob(url, sha256=sha256, size=size, what=what, check=check, role=role)
    except NotFoundError as exc:
        raise NotFoundError(f"{what} is locked, but {url} is gone from the mirror; build from a "
                            "vendored mirror (`alpine-composer vendor PROFILE DIR` copies the "
                            "locked inputs from the cache or a mirror that has them, then "
                            "`--mirror DIR`)") from exc



def _find_image(
    fetcher: Fetcher, yaml_url: str, *, branch: str, arch: str, release: str | None
) -> ReleaseImage | None:
    """The yaml entry to use; None when a pinned release must be fetched by name."""
    what = f"latest-releases.yaml for {branch}/{arch}"
    try:
        data = fetcher.fetch_metadata(
            yaml_url, what=what, max_size=MAX_RELEASES_BYTES,
            check=lambda raw: parse_latest_releases(raw, source=yaml_url))
    except NotFoundError:
        if release is None:
            raise
        return None
    images = parse_latest_releases(data, source=yaml_url)
    try:
        return select_release(
            images, flavor=MINIROOTFS_FLAVOR, arch=arch, version=release, source=yaml_url
        )
    except NotFoundError:
        if release is None:
            raise
        return None


def _checksum(
    fetcher: Fetcher, tarball_url: str, *, file: str, yaml_sha256: str | None, what: str
) -> str:
    """The sha256 to download against; yaml and ``.sha256`` must agree when both exist."""
    sha_url = tarball_url + ".sha256"
    try:
        data = fetcher.fetch_metadata(
            sha_url, what=f"{what} checksum",
            check=lambda raw: parse_checksum_file(raw, filename=file, source=sha_url))
    except NotFoundError:
        if yaml_sha256 is None:
            raise
        return yaml_sha256
    published = parse_checksum_file(data, filename=file, source=sha_url)
    if yaml_sha256 is not None and published != yaml_sha256:
        raise VerificationError(
            f"{what}: latest-releases.yaml says sha256 {yaml_sha256} but {sha_url} "
            f"says {published}"
        )
    return published


def _signature(fetcher: Fetcher, tarball_url: str, *, what: str, allow_unsigned: bool) -> bytes | None:
    asc_url = tarball_url + ".asc"
    try:
        return fetcher.fetch_metadata(asc_url, what=f"{what} signature", max_size=1 << 20,
                                      role=InputRole.SIGNATURE)
    except NotFoundError as exc:
        if allow_unsigned:
            return None
        raise VerificationError(
            f"{what}: no OpenPGP signature (.asc) published at {asc_url}; set "
            "trust.allow_unsigned: true to accept a checksum-only release"
        ) from exc


def fetch_release_key(
    fetcher: Fetcher, *, key_ref: str, base_dir: Path, fingerprint: str
) -> ReleaseKey:
    """Load the release signing key from a URL or a path relative to ``base_dir``."""
    if is_url(key_ref):
        url = key_ref
    else:
        url = (base_dir / key_ref).resolve().as_uri()
    data = fetcher.fetch_metadata(url, what="release signing key", max_size=1 << 20,
                                  role=InputRole.RELEASE_KEY)
    return load_release_key(data, fingerprint=fingerprint, source=url)
