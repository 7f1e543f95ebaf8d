from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from composer.errors import ProfileError, VerificationError
from composer.sources.trust import (
    ReleaseKey,
    format_fingerprint,
    load_release_key,
    normalize_fingerprint,
    verify_detached,
)
from tests.helpers.gpg import (
    SigningKey,
    add_signing_subkey,
    export_public,
    make_signing_key,
    revoke,
    sign_detached,
    stop_agent,
)

NCOPA = Path(__file__).resolve().parents[2].parent / "shared/fixtures/alpine-real/gpg/ncopa.asc"
NCOPA_PIN = "0482 D840 22F5 2DF1 C4E7 CD43 293A CD09 07D9 495A"
DATA = b"alpine-minirootfs bytes\n" * 100


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "image.tar.gz"
    path.write_bytes(DATA)
    return path


def load(key: SigningKey, public: bytes | None = None) -> ReleaseKey:
    return load_release_key(public or key.public_armored, fingerprint=key.fingerprint, source="test.asc")


def test_good_signature_returns_primary_fingerprint(signing_key: SigningKey, data_file: Path) -> None:
    key = load(signing_key)
    signature = sign_detached(signing_key, DATA)
    assert signature.startswith(b"-----BEGIN PGP SIGNATURE-----")
    assert verify_detached(data_file, signature, key, what="image") == signing_key.fingerprint.lower()


def test_binary_key_binary_signature_and_spaced_pin(signing_key: SigningKey, data_file: Path) -> None:
    binary_key = export_public(signing_key, armor=False)
    pin = format_fingerprint(signing_key.fingerprint).lower()
    key = load_release_key(binary_key, fingerprint=pin, source="key.gpg")
    signature = sign_detached(signing_key, DATA, armor=False)
    assert verify_detached(data_file, signature, key, what="image") == signing_key.fingerprint.lower()


def test_changed_data_is_rejected(signing_key: SigningKey, data_file: Path) -> None:
    signature = sign_detached(signing_key, DATA)
    data_file.write_bytes(DATA + b"x")
    with pytest.raises(VerificationError) as err:
        verify_detached(data_file, signature, load(signing_key), what="minirootfs x.tar.gz")
    message = str(err.value)
    assert message.startswith(
        f"minirootfs x.tar.gz: bad OpenPGP signature (key {format_fingerprint(signing_key.fingerprint)}): "
    )
    assert "\n" not in message and "backtrace" not in message.lower()


def test_signature_by_another_key(signing_key: SigningKey, other_key: SigningKey, data_file: Path) -> None:
    signature = sign_detached(other_key, DATA)
    with pytest.raises(VerificationError) as err:
        verify_detached(data_file, signature, load(signing_key), what="image")
    assert str(err.value) == (
        f"image: signed by key {format_fingerprint(other_key.fingerprint)}, not by the pinned "
        f"release key {format_fingerprint(signing_key.fingerprint)}"
    )


def test_key_with_wrong_fingerprint(signing_key: SigningKey, other_key: SigningKey) -> None:
    with pytest.raises(VerificationError) as err:
        load_release_key(other_key.public_armored, fingerprint=signing_key.fingerprint, source="k.asc")
    assert str(err.value) == (
        f"release key k.asc: fingerprint {format_fingerprint(other_key.fingerprint)} does not "
        f"match the pinned {format_fingerprint(signing_key.fingerprint)}"
    )


def test_sha1_signature_is_rejected(signing_key: SigningKey, data_file: Path) -> None:
    signature = sign_detached(signing_key, DATA, digest="SHA1")
    with pytest.raises(VerificationError) as err:
        verify_detached(data_file, signature, load(signing_key), what="image")
    assert str(err.value) == "image: signature uses the weak hash SHA-1, which the OpenPGP policy rejects"


def test_garbage_signature_and_key(signing_key: SigningKey, data_file: Path) -> None:
    with pytest.raises(VerificationError, match=r"^image: signature is not a valid OpenPGP signature: "):
        verify_detached(data_file, b"<html>not found</html>", load(signing_key), what="image")
    with pytest.raises(VerificationError, match=r"^release key k\.asc: "):
        load_release_key(b"<html>", fingerprint=signing_key.fingerprint, source="k.asc")


def test_malformed_pin_is_a_profile_error() -> None:
    with pytest.raises(ProfileError) as err:
        normalize_fingerprint("293ACD0907D9495A")
    assert str(err.value) == "release key fingerprint '293ACD0907D9495A' is not 40 or 64 hex digits"
    assert normalize_fingerprint("0x" + NCOPA_PIN.replace(" ", "")) == NCOPA_PIN.replace(" ", "").lower()


def test_signature_by_signing_subkey_maps_to_primary(tmp_path: Path, data_file: Path) -> None:
    key = make_signing_key(tmp_path, name="Subkey Signer <sub@example.invalid>")
    try:
        subkey = add_signing_subkey(key)
        release_key = load(key, export_public(key))
        signature = sign_detached(key, DATA, signer=subkey)
        assert verify_detached(data_file, signature, release_key, what="image") == key.fingerprint.lower()
    finally:
        stop_agent(key)


def test_revoked_key_is_rejected(tmp_path: Path, data_file: Path) -> None:
    key = make_signing_key(tmp_path, name="Revoked <revoked@example.invalid>")
    try:
        revoked = revoke(key)
    finally:
        stop_agent(key)
    with pytest.raises(VerificationError) as err:
        load(key, revoked)
    assert str(err.value) == f"release key test.asc: key {format_fingerprint(key.fingerprint)} is revoked"


def test_expired_key_is_rejected(tmp_path: Path) -> None:
    key = make_signing_key(tmp_path, name="Old <old@example.invalid>", expires="2020-06-01",
                           faked_time="20200101T000000")
    stop_agent(key)
    with pytest.raises(VerificationError) as err:
        load(key)
    assert str(err.value).startswith(
        f"release key test.asc: key {format_fingerprint(key.fingerprint)} expired on 2020-06-0"
    )
    # Before its expiry it is acceptable: expiry is judged at the given moment.
    before = dt.datetime(2020, 3, 1, tzinfo=dt.UTC)
    assert load_release_key(key.public_armored, fingerprint=key.fingerprint, source="k", now=before)


def test_real_alpine_release_key() -> None:
    if not NCOPA.is_file():
        pytest.skip(f"real Alpine fixtures not found at {NCOPA} (../shared is absent)")
    key = load_release_key(NCOPA.read_bytes(), fingerprint=NCOPA_PIN, source=str(NCOPA))
    assert key.fingerprint == "0482d84022f52df1c4e7cd43293acd0907d9495a"
    # The encryption subkey is part of the certificate too.
    assert "498a2e7c598ffe67966416b19e2ce29c63fe7a06" in key.key_fingerprints


def test_real_alpine_key_rejects_a_foreign_signature(signing_key: SigningKey, data_file: Path) -> None:
    if not NCOPA.is_file():
        pytest.skip(f"real Alpine fixtures not found at {NCOPA} (../shared is absent)")
    key = load_release_key(NCOPA.read_bytes(), fingerprint=NCOPA_PIN, source="ncopa.asc")
    with pytest.raises(VerificationError) as err:
        verify_detached(data_file, sign_detached(signing_key, DATA), key, what="image")
    assert str(err.value) == (
        f"image: signed by key {format_fingerprint(signing_key.fingerprint)}, "
        f"not by the pinned release key {NCOPA_PIN}"
    )
