from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from composer.errors import NotFoundError, VerificationError
from composer.sources.cache import ContentCache
from composer.sources.fetch import Fetcher
from composer.sources.minirootfs import VerifiedMinirootfs, fetch_minirootfs, fetch_release_key
from composer.sources.trust import ReleaseKey, format_fingerprint, load_release_key
from tests.helpers.gpg import SigningKey, sign_detached
from tests.helpers.httpserver import Server
from tests.helpers.mirror import MirrorInfo, build_mirror, make_minirootfs_tarball


@pytest.fixture
def release_key(signing_key: SigningKey) -> ReleaseKey:
    return load_release_key(signing_key.public_armored, fingerprint=signing_key.fingerprint,
                            source="test key")


def run(fetcher: Fetcher, mirror: str, key: ReleaseKey, *, release: str | None = None,
        allow_unsigned: bool = False, log: list[str] | None = None,
        info: MirrorInfo) -> VerifiedMinirootfs:
    messages = log if log is not None else []
    return fetch_minirootfs(fetcher, mirror=mirror, branch=info.branch, arch=info.arch,
                            release=release, key=key, allow_unsigned=allow_unsigned,
                            log=messages.append)


def test_make_minirootfs_tarball_is_deterministic() -> None:
    assert make_minirootfs_tarball() == make_minirootfs_tarball()
    assert make_minirootfs_tarball("3.21.0") != make_minirootfs_tarball()


def test_signed_release_over_http(
    served: Server, signing_key: SigningKey, release_key: ReleaseKey,
    make_fetcher: Callable[..., Fetcher],
) -> None:
    info = build_mirror(served.root, key=signing_key)
    fetcher = make_fetcher()
    result = run(fetcher, served.url + "/", release_key, info=info)
    base = f"{served.url}/v3.20/releases/x86_64/"
    assert result.path.read_bytes() == info.tarball
    assert (result.url, result.version, result.size, result.sha256) == (
        base + info.filename, "3.20.3", info.size, info.sha256)
    assert result.signed_by == signing_key.fingerprint.lower()
    assert result.release_url == base + "latest-releases.yaml"
    assert [i.url for i in fetcher.inputs] == [
        base + "latest-releases.yaml", base + info.filename + ".sha256",
        base + info.filename + ".asc", base + info.filename,
    ]


def test_file_mirror_gives_the_same_result(
    tmp_path: Path, signing_key: SigningKey, release_key: ReleaseKey,
    make_fetcher: Callable[..., Fetcher],
) -> None:
    info = build_mirror(tmp_path / "mirror", key=signing_key)
    result = run(make_fetcher(), info.file_url, release_key, info=info)
    assert result.sha256 == hashlib.sha256(info.tarball).hexdigest()
    assert result.signed_by == signing_key.fingerprint.lower()


def test_second_run_works_offline(
    served: Server, signing_key: SigningKey, release_key: ReleaseKey, cache: ContentCache,
    make_fetcher: Callable[..., Fetcher],
) -> None:
    info = build_mirror(served.root, key=signing_key)
    first = run(make_fetcher(), served.url, release_key, info=info)
    before = len(served.requests)
    second = run(make_fetcher(offline=True), served.url, release_key, info=info)
    assert second == first
    assert len(served.requests) == before


def test_missing_signature_is_refused(
    served: Server, signing_key: SigningKey, release_key: ReleaseKey,
    make_fetcher: Callable[..., Fetcher], cache: ContentCache,
) -> None:
    info = build_mirror(served.root, key=signing_key, signed=False)
    with pytest.raises(VerificationError) as err:
        run(make_fetcher(), served.url, release_key, info=info)
    asc = f"{served.url}/{info.relpath(info.filename)}.asc"
    assert str(err.value) == (
        f"minirootfs {info.filename}: no OpenPGP signature (.asc) published at {asc}; "
        "set trust.allow_unsigned: true to accept a checksum-only release"
    )
    assert served.count(info.relpath(info.filename)) == 0  # failed before the big download


def test_missing_signature_allowed_loudly(
    served: Server, signing_key: SigningKey, release_key: ReleaseKey,
    make_fetcher: Callable[..., Fetcher],
) -> None:
    info = build_mirror(served.root, key=None, signed=False)
    log: list[str] = []
    result = run(make_fetcher(), served.url, release_key, info=info, allow_unsigned=True, log=log)
    assert result.signed_by is None
    assert result.path.read_bytes() == info.tarball
    assert len(log) == 1 and log[0].startswith("WARNING: ")
    assert "accepted WITHOUT a signature" in log[0]


def test_signature_by_another_key_fails(
    served: Server, signing_key: SigningKey, other_key: SigningKey, release_key: ReleaseKey,
    make_fetcher: Callable[..., Fetcher], cache: ContentCache,
) -> None:
    info = build_mirror(served.root, key=other_key)
    with pytest.raises(VerificationError) as err:
        run(make_fetcher(), served.url, release_key, info=info, allow_unsigned=True)
    assert str(err.value) == (
        f"minirootfs {info.filename}: signed by key {format_fingerprint(other_key.fingerprint)}, "
        f"not by the pinned release key {format_fingerprint(signing_key.fingerprint)}"
    )
    assert cache.path_for(info.sha256) is None
    assert list(cache.tmp_dir.iterdir()) == []


def test_tarball_swapped_after_publication(
    served: Server, signing_key: SigningKey, release_key: ReleaseKey,
    make_fetcher: Callable[..., Fetcher], cache: ContentCache,
) -> None:
    info = build_mirror(served.root, key=signing_key)
    evil = make_minirootfs_tarball("6.6.6")
    info.tarball_path.write_bytes(evil[: info.size].ljust(info.size, b"\0"))
    with pytest.raises(VerificationError, match=r"sha256 mismatch: expected " + info.sha256):
        run(make_fetcher(), served.url, release_key, info=info)
    assert list(cache.blobs_dir.glob(hashlib.sha256(info.tarball_path.read_bytes()).hexdigest())) == []


def test_consistent_but_resigned_tarball_needs_the_right_signature(
    served: Server, signing_key: SigningKey, release_key: ReleaseKey,
    make_fetcher: Callable[..., Fetcher], cache: ContentCache,
) -> None:
    """A mirror that rewrites yaml + .sha256 for new bytes is caught by the .asc."""
    info = build_mirror(served.root, key=signing_key)
    good_asc = (info.release_dir / f"{info.filename}.asc").read_bytes()
    swapped = build_mirror(served.root, key=None, signed=False,
                           tarball=make_minirootfs_tarball("9.9.9"))
    (info.release_dir / f"{info.filename}.asc").write_bytes(good_asc)
    with pytest.raises(VerificationError, match=r"^minirootfs .*: bad OpenPGP signature"):
        run(make_fetcher(), served.url, release_key, info=swapped)
    assert cache.path_for(swapped.sha256) is None


def test_yaml_and_sha256_file_must_agree(
    served: Server, signing_key: SigningKey, release_key: ReleaseKey,
    make_fetcher: Callable[..., Fetcher],
) -> None:
    info = build_mirror(served.root, key=signing_key)
    sha_file = info.release_dir / f"{info.filename}.sha256"
    sha_file.write_text(f"{'0' * 64}  {info.filename}\n")
    with pytest.raises(VerificationError) as err:
        run(make_fetcher(), served.url, release_key, info=info)
    assert str(err.value) == (
        f"minirootfs {info.filename}: latest-releases.yaml says sha256 {info.sha256} but "
        f"{served.url}/{info.relpath(info.filename)}.sha256 says {'0' * 64}"
    )


def test_pinned_release_not_in_yaml_is_fetched_by_name(
    served: Server, signing_key: SigningKey, release_key: ReleaseKey,
    make_fetcher: Callable[..., Fetcher],
) -> None:
    old = build_mirror(served.root, key=signing_key, version="3.20.1")
    current = build_mirror(served.root, key=signing_key, version="3.20.3")  # yaml now lists 3.20.3
    log: list[str] = []
    result = run(make_fetcher(), served.url, release_key, release="3.20.1", info=current, log=log)
    assert result.path.read_bytes() == old.tarball
    assert (result.version, result.release_url) == ("3.20.1", None)
    assert log == [f"v3.20/x86_64: 3.20.1 is not in latest-releases.yaml; using {old.filename} directly"]


def test_pinned_release_absent_everywhere(
    served: Server, signing_key: SigningKey, release_key: ReleaseKey,
    make_fetcher: Callable[..., Fetcher],
) -> None:
    info = build_mirror(served.root, key=signing_key)
    with pytest.raises(NotFoundError) as err:
        run(make_fetcher(), served.url, release_key, release="3.20.0", info=info)
    assert str(err.value) == (
        f"minirootfs alpine-minirootfs-3.20.0-x86_64.tar.gz checksum: {served.url}/"
        f"{info.relpath('alpine-minirootfs-3.20.0-x86_64.tar.gz')}.sha256: HTTP 404 Not Found"
    )


def test_arch_missing_from_yaml(
    served: Server, signing_key: SigningKey, release_key: ReleaseKey,
    make_fetcher: Callable[..., Fetcher],
) -> None:
    info = build_mirror(served.root, key=signing_key)
    (info.release_dir.parent / "s390x").mkdir()
    (info.release_dir.parent / "s390x" / "latest-releases.yaml").write_bytes(
        (info.release_dir / "latest-releases.yaml").read_bytes())
    with pytest.raises(NotFoundError) as err:
        fetch_minirootfs(make_fetcher(), mirror=served.url, branch="v3.20", arch="s390x",
                         release=None, key=release_key, allow_unsigned=False, log=print)
    yaml_url = f"{served.url}/v3.20/releases/s390x/latest-releases.yaml"
    assert str(err.value) == f"latest-releases.yaml at {yaml_url} has no alpine-minirootfs entry for s390x"


def test_fetch_release_key_from_path_and_url(
    served: Server, tmp_path: Path, signing_key: SigningKey, make_fetcher: Callable[..., Fetcher],
) -> None:
    profile_dir = tmp_path / "profiles"
    (profile_dir / "keys").mkdir(parents=True)
    (profile_dir / "keys" / "release.asc").write_bytes(signing_key.public_armored)
    (served.root / "release.asc").write_bytes(signing_key.public_armored)
    fetcher = make_fetcher()
    by_path = fetch_release_key(fetcher, key_ref="keys/release.asc", base_dir=profile_dir,
                                fingerprint=signing_key.fingerprint)
    by_url = fetch_release_key(fetcher, key_ref=served.url_for("release.asc"), base_dir=profile_dir,
                               fingerprint=format_fingerprint(signing_key.fingerprint))
    assert by_path.fingerprint == by_url.fingerprint == signing_key.fingerprint.lower()
    assert by_path.source == (profile_dir / "keys" / "release.asc").as_uri()
    assert by_url.source == served.url_for("release.asc")
    missing = r"^release signing key: file://.*/keys/nope\.asc: file not found$"
    with pytest.raises(NotFoundError, match=missing):
        fetch_release_key(fetcher, key_ref="keys/nope.asc", base_dir=profile_dir,
                          fingerprint=signing_key.fingerprint)


def test_signature_fixture_helper_signs_what_it_is_given(signing_key: SigningKey) -> None:
    assert sign_detached(signing_key, b"a") != sign_detached(signing_key, b"b")


def test_cached_tarball_is_rechecked_against_the_signature(
    served: Server, signing_key: SigningKey, other_key: SigningKey, release_key: ReleaseKey,
    make_fetcher: Callable[..., Fetcher],
) -> None:
    """A blob already in the cache is not trusted on its own: the .asc still decides."""
    info = build_mirror(served.root, key=signing_key)
    run(make_fetcher(), served.url, release_key, info=info)
    (info.release_dir / f"{info.filename}.asc").write_bytes(sign_detached(other_key, info.tarball))
    with pytest.raises(VerificationError, match="not by the pinned release key"):
        run(make_fetcher(metadata_ttl=0), served.url, release_key, info=info)
    assert served.count(info.relpath(info.filename)) == 1
