"""Loading the Secure Boot key and certificate a disk output names: every way it can be
wrong is one line naming the file or variable, never the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from composer.errors import ProfileError
from composer.profile.model import SecureBoot
from composer.secure_boot import load_secure_boot
from tests.helpers.sbkeys import SbKeys, make_identity


@pytest.fixture(scope="module")
def keys() -> SbKeys:
    return make_identity()


@pytest.fixture
def folder(tmp_path: Path, keys: SbKeys) -> Path:
    keys.write(tmp_path)
    return tmp_path


def refused(spec: SecureBoot, base: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ProfileError) as caught:
        load_secure_boot(spec, base, env or {})
    message = str(caught.value)
    assert "\n" not in message and "PRIVATE KEY" not in message
    assert caught.value.exit_code == 2
    return message


def test_key_from_a_file(folder: Path, keys: SbKeys) -> None:
    identity = load_secure_boot(SecureBoot(key="db.key", cert="db.crt"), folder, {})
    assert identity.cert == keys.identity.cert
    assert identity.key.private_numbers() == keys.identity.key.private_numbers()
    assert "PRIVATE" not in repr(identity) and "composer test db" in repr(identity)
    assert identity.cert_pem() == keys.cert_pem


def test_certificate_file_with_comments_and_a_chain(folder: Path, keys: SbKeys) -> None:
    """The first certificate of the file is the signer's; cert_pem() gives it alone."""
    other = make_identity("issuer").cert_pem
    (folder / "db.crt").write_bytes(b"# my signing certificate\n" + keys.cert_pem + other)
    identity = load_secure_boot(SecureBoot(key="db.key", cert="db.crt"), folder, {})
    assert identity.cert_pem() == keys.cert_pem


def test_key_from_the_environment(folder: Path, keys: SbKeys) -> None:
    (folder / "db.key").unlink()
    identity = load_secure_boot(SecureBoot(key_env="SB_KEY", cert="db.crt"), folder,
                                {"SB_KEY": keys.key_pem.decode()})
    assert identity.key.private_numbers() == keys.identity.key.private_numbers()


def test_missing_files(folder: Path) -> None:
    assert refused(SecureBoot(key="nope.key", cert="db.crt"), folder) == \
        f"secure_boot.key {folder}/nope.key: no such file"
    assert refused(SecureBoot(key="db.key", cert="nope.crt"), folder) == \
        f"secure_boot.cert {folder}/nope.crt: no such file"


def test_environment_variable_unset_or_empty(folder: Path) -> None:
    spec = SecureBoot(key_env="SB_KEY", cert="db.crt")
    assert refused(spec, folder) == \
        "secure_boot.key_env: environment variable SB_KEY is not set"
    assert refused(spec, folder, {"SB_KEY": " \n"}) == \
        "secure_boot.key_env: environment variable SB_KEY is empty"


def test_key_that_does_not_match_the_certificate(folder: Path) -> None:
    make_identity("other").write(folder, "other")
    assert refused(SecureBoot(key="other.key", cert="db.crt"), folder) == \
        (f"secure_boot.key {folder}/other.key: the key does not match the public key of "
         f"secure_boot.cert {folder}/db.crt")


def test_encrypted_key_is_refused(folder: Path, keys: SbKeys) -> None:
    encrypted = keys.identity.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"))
    (folder / "db.key").write_bytes(encrypted)
    assert refused(SecureBoot(key="db.key", cert="db.crt"), folder) == \
        (f"secure_boot.key {folder}/db.key: the key is encrypted; give an unencrypted PEM key "
         "(kept in a protected file or a secret environment variable)")
    assert refused(SecureBoot(key_env="K", cert="db.crt"), folder, {"K": encrypted.decode()}) \
        .startswith("secure_boot.key_env: environment variable K: the key is encrypted;")


def test_not_pem(folder: Path, keys: SbKeys) -> None:
    (folder / "der.key").write_bytes(keys.identity.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    assert refused(SecureBoot(key="der.key", cert="db.crt"), folder) == \
        f"secure_boot.key {folder}/der.key: not a PEM private key"
    (folder / "broken.key").write_bytes(keys.key_pem[:200])
    assert refused(SecureBoot(key="broken.key", cert="db.crt"), folder) == \
        f"secure_boot.key {folder}/broken.key: not a readable PEM private key"
    assert refused(SecureBoot(key="db.crt", cert="db.crt"), folder) == \
        f"secure_boot.key {folder}/db.crt: not a readable PEM private key"
    assert refused(SecureBoot(key="db.key", cert="db.key"), folder) == \
        f"secure_boot.cert {folder}/db.key: not a PEM X.509 certificate"
    (folder / "dir.key").mkdir()
    assert refused(SecureBoot(key="dir.key", cert="db.crt"), folder) == \
        f"secure_boot.key {folder}/dir.key: not a regular file"


def _write_key(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def test_unsupported_key_types(folder: Path) -> None:
    _write_key(folder / "small.key", rsa.generate_private_key(public_exponent=65537,
                                                              key_size=1024))
    assert refused(SecureBoot(key="small.key", cert="db.crt"), folder) == \
        (f"secure_boot.key {folder}/small.key: an RSA key of 1024 bits; Secure Boot signing "
         "takes at least 2048")
    _write_key(folder / "ec.key", ec.generate_private_key(ec.SECP256R1()))
    assert refused(SecureBoot(key="ec.key", cert="db.crt"), folder) == \
        (f"secure_boot.key {folder}/ec.key: an EC key; Secure Boot signing takes an RSA "
         "key of at least 2048 bits")
