"""Detached OpenPGP signatures over a build's SHA256SUMS (and its provenance), via pysequoia.

``build --sign KEYFILE`` reads a secret key from a file (armored or binary); a protected
key's passphrase comes from the environment (the context reads it), never from argv.
``verify --signature KEYFILE`` checks the signatures against the certificates in a file.
Signatures carry their creation time, so they are not part of the reproducible outputs:
they sit beside SHA256SUMS as ``<file>.asc`` and are not listed in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pysequoia

from composer.context import SIGNING_PASSPHRASE_ENV as PASSPHRASE_ENV
from composer.errors import UsageError, VerificationError
from composer.jsonsafe import read_regular_file
from composer.sources.trust import format_fingerprint

SIGNATURE_SUFFIX = ".asc"
MAX_KEY_FILE = 1 << 20
MAX_SIGNATURE = 64 * 1024


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read(path: Path, what: str, limit: int,
          error: type[UsageError | VerificationError] = UsageError) -> bytes:
    try:
        return read_regular_file(path, what=f"{what} {path}", max_bytes=limit, error=error)
    except FileNotFoundError:
        raise error(f"{what} {path}: no such file") from None


@dataclass(frozen=True)
class SigningKey:
    """A ready signer and the fingerprint of the key it belongs to."""

    fingerprint: str
    signer: pysequoia.PySigner = field(repr=False, compare=False)


def load_signing_key(path: Path, passphrase: str | None) -> SigningKey:
    """The signing key in ``path``; checked before the build starts, so a wrong passphrase
    costs nothing."""
    data = _read(path, "signing key", MAX_KEY_FILE)
    try:
        has_secret = pysequoia.Cert.from_bytes(data).has_secret_keys
        tsk = pysequoia.Tsk.from_bytes(data)
    except (RuntimeError, ValueError, OverflowError) as exc:
        raise UsageError(f"signing key {path}: not an OpenPGP secret key "
                         f"({_first_line(exc)})") from None
    if not has_secret:
        raise UsageError(f"signing key {path}: not an OpenPGP secret key (a public key only)")
    fingerprint = tsk.extract_certificate().fingerprint.upper()
    try:
        signer = tsk.signer(passphrase) if passphrase is not None else tsk.signer()
    except (RuntimeError, ValueError, OverflowError) as exc:
        hint = (f"; set {PASSPHRASE_ENV} to its passphrase" if passphrase is None
                else " (is the passphrase right?)")
        raise UsageError(f"signing key {path} ({format_fingerprint(fingerprint)}): cannot sign "
                         f"with it: {_first_line(exc)}{hint}") from None
    return SigningKey(fingerprint=fingerprint, signer=signer)


def sign_detached(key: SigningKey, data: bytes) -> bytes:
    """An armored detached signature over ``data``."""
    try:
        signature: bytes = pysequoia.sign(key.signer, data, mode=pysequoia.SignatureMode.DETACHED)
    except (RuntimeError, ValueError, OverflowError) as exc:
        raise UsageError(f"signing with {format_fingerprint(key.fingerprint)} failed: "
                         f"{_first_line(exc)}") from None
    return signature


def verify_detached_file(data_path: Path, keyfile: Path) -> str:
    """Check ``<data_path>.asc`` against the certificates in ``keyfile``; the signer's
    fingerprint on success, a one-line VerificationError naming the file otherwise."""
    sig_path = data_path.with_name(data_path.name + SIGNATURE_SUFFIX)
    certs_data = _read(keyfile, "signature key", MAX_KEY_FILE)
    try:
        certs = pysequoia.Cert.split_bytes(certs_data)
    except (RuntimeError, ValueError, OverflowError) as exc:
        raise UsageError(f"signature key {keyfile}: not an OpenPGP key ({_first_line(exc)})") \
            from None
    if not certs:
        raise UsageError(f"signature key {keyfile}: no OpenPGP certificate in it")
    if not sig_path.is_file():
        raise VerificationError(f"{sig_path}: missing (the build was not signed; "
                                "`build --sign KEYFILE` signs it)")
    signature = _read(sig_path, "signature", MAX_SIGNATURE, VerificationError)
    try:
        sig = pysequoia.Sig.from_bytes(signature)
        result = pysequoia.verify(file=str(data_path), store=lambda _ids: certs, signature=sig)
        signers = [str(valid.certificate).upper() for valid in result.valid_sigs]
    except (RuntimeError, ValueError, OverflowError) as exc:
        names = ", ".join(format_fingerprint(c.fingerprint) for c in certs)
        raise VerificationError(f"{sig_path}: not a valid signature of {data_path.name} by "
                                f"{names}: {_first_line(exc)}") from None
    if not signers:
        raise VerificationError(f"{sig_path}: no valid signature of {data_path.name} by the key "
                                f"in {keyfile}")
    return signers[0]
