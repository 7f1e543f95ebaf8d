"""OpenPGP checks for release images, through pysequoia (Sequoia's policy).

Sequoia's standard policy already refuses SHA-1 signatures, revoked keys and
keys that were not alive when they signed; the explicit checks here exist to
give the user a message that says which of those happened.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pysequoia
from pysequoia.packet import HashAlgorithm, PacketPile

from composer.errors import ProfileError, VerificationError

_WEAK_HASHES = (
    (HashAlgorithm.MD5, "MD5"),
    (HashAlgorithm.SHA1, "SHA-1"),
    (HashAlgorithm.RipeMD, "RIPEMD-160"),
)


def _first_line(exc: BaseException) -> str:
    """pysequoia may append a Rust backtrace; the first line is the message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def normalize_fingerprint(value: str) -> str:
    """Lowercase hex without spaces or ``0x``; a v4 (40) or v6 (64) fingerprint."""
    cleaned = re.sub(r"\s+", "", value).lower()
    if cleaned.startswith("0x"):
        cleaned = cleaned[2:]
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", cleaned):
        raise ProfileError(f"release key fingerprint {value!r} is not 40 or 64 hex digits")
    return cleaned


def format_fingerprint(fingerprint: str) -> str:
    """The usual grouped form: ``0482 D840 22F5 ...``."""
    upper = fingerprint.upper()
    return " ".join(upper[i : i + 4] for i in range(0, len(upper), 4))


@dataclass(frozen=True)
class ReleaseKey:
    """A pinned OpenPGP certificate that release images must be signed by."""

    fingerprint: str
    source: str
    cert: pysequoia.Cert = field(compare=False, repr=False)
    key_fingerprints: frozenset[str] = field(default=frozenset(), compare=False)

    def key_ids(self) -> frozenset[str]:
        """The 16-hex key ids of the primary key and its subkeys."""
        return frozenset(fpr[-16:] for fpr in self.key_fingerprints)


def load_release_key(
    data: bytes, *, fingerprint: str, source: str, now: dt.datetime | None = None
) -> ReleaseKey:
    """Parse armored or binary key bytes and keep the certificate matching the pin.

    ``now`` decides expiry (defaults to the current time: a key's validity is
    a trust decision about today, not part of the reproducible output).
    """
    pin = normalize_fingerprint(fingerprint)
    try:
        certs = pysequoia.Cert.split_bytes(data)
        fingerprints = [c.fingerprint.lower() for c in certs]
    except (RuntimeError, ValueError, OverflowError) as exc:
        raise VerificationError(
            f"release key {source}: not an OpenPGP public key: {_first_line(exc)}"
        ) from exc
    if not certs:
        raise VerificationError(f"release key {source}: no OpenPGP certificate found")
    matching = [c for c, fpr in zip(certs, fingerprints, strict=True) if fpr == pin]
    if not matching:
        found = ", ".join(format_fingerprint(fpr) for fpr in fingerprints)
        raise VerificationError(
            f"release key {source}: fingerprint {found} does not match the pinned "
            f"{format_fingerprint(pin)}"
        )
    cert = matching[0]
    try:
        revoked = cert.is_revoked
        expiration = cert.expiration
    except (RuntimeError, ValueError, OverflowError) as exc:
        raise VerificationError(
            f"release key {source}: key {format_fingerprint(pin)} is unusable: {_first_line(exc)}"
        ) from exc
    if revoked:
        raise VerificationError(f"release key {source}: key {format_fingerprint(pin)} is revoked")
    moment = now if now is not None else dt.datetime.now(dt.UTC)
    if expiration is not None and expiration <= moment:
        raise VerificationError(
            f"release key {source}: key {format_fingerprint(pin)} expired on "
            f"{expiration.date().isoformat()}"
        )
    return ReleaseKey(
        fingerprint=pin,
        source=source,
        cert=cert,
        key_fingerprints=frozenset(_component_fingerprints(cert) | {pin}),
    )


def _component_fingerprints(cert: pysequoia.Cert) -> set[str]:
    fingerprints: set[str] = set()
    try:
        for packet in PacketPile.from_bytes(bytes(cert)):
            if packet.fingerprint:
                fingerprints.add(packet.fingerprint.lower())
    except (RuntimeError, ValueError, OverflowError):
        pass
    return fingerprints


def verify_detached(data_path: Path, signature: bytes, key: ReleaseKey, *, what: str) -> str:
    """Check a detached signature over ``data_path``; return the signing primary fingerprint."""
    try:
        sig = pysequoia.Sig.from_bytes(signature)
        hash_algorithm = sig.hash_algorithm
        issuer = (sig.issuer_fingerprint or "").lower()
        issuer_id = (sig.issuer_key_id or "").lower()
    except (RuntimeError, ValueError, OverflowError) as exc:
        raise VerificationError(
            f"{what}: signature is not a valid OpenPGP signature: {_first_line(exc)}"
        ) from exc
    weak = next((name for algo, name in _WEAK_HASHES if hash_algorithm == algo), None)
    if weak is not None:
        raise VerificationError(
            f"{what}: signature uses the weak hash {weak}, which the OpenPGP policy rejects"
        )
    if (issuer and issuer not in key.key_fingerprints) or (
        not issuer and issuer_id and issuer_id not in key.key_ids()
    ):
        signer = format_fingerprint(issuer or issuer_id)
        raise VerificationError(
            f"{what}: signed by key {signer}, not by the pinned release key "
            f"{format_fingerprint(key.fingerprint)}"
        )
    try:
        result = pysequoia.verify(
            file=os.fspath(data_path), store=lambda _ids: [key.cert], signature=sig
        )
    except (RuntimeError, ValueError, OverflowError) as exc:
        raise VerificationError(
            f"{what}: bad OpenPGP signature (key {format_fingerprint(key.fingerprint)}): "
            f"{_first_line(exc)}"
        ) from exc
    try:
        signers = [str(valid.certificate).lower() for valid in result.valid_sigs]
    except (RuntimeError, ValueError) as exc:
        raise VerificationError(f"{what}: bad OpenPGP signature: {_first_line(exc)}") from exc
    if key.fingerprint in signers:
        return key.fingerprint
    raise VerificationError(
        f"{what}: no valid signature by the pinned release key {format_fingerprint(key.fingerprint)}"
    )
