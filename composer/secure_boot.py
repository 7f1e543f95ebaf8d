"""The Secure Boot signing identity of a disk output: its PEM key and certificate, loaded.

The key comes from a file or from an environment variable (``secure_boot.key`` or
``key_env``), never from the command line, and never enters an output, the manifest or
an error message: each message names the file or variable and what is wrong with it.
Checked before anything is written: the key is an unencrypted PEM RSA key of at least
2048 bits (what UEFI firmware verifies; EDK2 has no other algorithm in its Authenticode
path) and its public key is the certificate's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from composer.errors import ProfileError
from composer.jsonsafe import read_regular_file
from composer.profile.model import SecureBoot
from composer.writers.authenticode import SigningIdentity

__all__ = ["MIN_RSA_BITS", "SigningIdentity", "load_secure_boot"]

MIN_RSA_BITS = 2048
MAX_PEM_BYTES = 1 << 20


def _read(path: Path, what: str) -> bytes:
    try:
        return read_regular_file(path, what=what, max_bytes=MAX_PEM_BYTES, error=ProfileError)
    except FileNotFoundError:
        raise ProfileError(f"{what}: no such file") from None


def _key_bytes(spec: SecureBoot, base: Path, env: Mapping[str, str]) -> tuple[bytes, str]:
    if spec.key is not None:
        what = f"secure_boot.key {base / spec.key}"
        return _read(base / spec.key, what), what
    assert spec.key_env is not None  # the model holds exactly one of key and key_env
    what = f"secure_boot.key_env: environment variable {spec.key_env}"
    value = env.get(spec.key_env)
    if value is None:
        raise ProfileError(f"{what} is not set")
    if not value.strip():
        raise ProfileError(f"{what} is empty")
    return value.encode("utf-8", "surrogateescape"), what


def _kind(key: object) -> str:
    for family, name in ((ec.EllipticCurvePrivateKey, "an EC key"),
                         (ed25519.Ed25519PrivateKey, "an Ed25519 key"),
                         (ed448.Ed448PrivateKey, "an Ed448 key"), (dsa.DSAPrivateKey, "a DSA key")):
        if isinstance(key, family):
            return name
    return "a key of another type"


def _private_key(data: bytes, what: str) -> rsa.RSAPrivateKey:
    if b"-----BEGIN" not in data:
        raise ProfileError(f"{what}: not a PEM private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ProfileError(f"{what}: the key is encrypted; give an unencrypted PEM key (kept "
                           "in a protected file or a secret environment variable)") from None
    except (ValueError, UnicodeError):
        raise ProfileError(f"{what}: not a readable PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ProfileError(f"{what}: {_kind(key)}; Secure Boot signing takes an RSA key of at "
                           f"least {MIN_RSA_BITS} bits")
    if key.key_size < MIN_RSA_BITS:
        raise ProfileError(f"{what}: an RSA key of {key.key_size} bits; Secure Boot signing "
                           f"takes at least {MIN_RSA_BITS}")
    return key


def _certificate(path: Path) -> x509.Certificate:
    what = f"secure_boot.cert {path}"
    data = _read(path, what)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ProfileError(f"{what}: not a PEM X.509 certificate") from None


def _public(key: rsa.RSAPublicKey | object) -> bytes | None:
    if not isinstance(key, rsa.RSAPublicKey):
        return None
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def load_secure_boot(spec: SecureBoot, base: Path, env: Mapping[str, str]) -> SigningIdentity:
    """The key and certificate ``spec`` names (paths relative to ``base``, the profile's
    folder; ``key_env`` looked up in ``env``), checked to belong together."""
    cert_path = base / spec.cert
    cert = _certificate(cert_path)
    data, what = _key_bytes(spec, base, env)
    key = _private_key(data, what)
    if _public(key.public_key()) != _public(cert.public_key()):
        raise ProfileError(f"{what}: the key does not match the public key of "
                           f"secure_boot.cert {cert_path}")
    return SigningIdentity(key, cert)
