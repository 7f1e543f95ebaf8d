"""Secure Boot test identities: RSA keys and self-signed certificates made at test time
(no key file is committed), and the PEM files a profile or a verifier reads."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from composer.writers.authenticode import SigningIdentity


@dataclass(frozen=True)
class SbKeys:
    identity: SigningIdentity
    key_pem: bytes
    cert_pem: bytes

    def write(self, folder: Path, stem: str = "db") -> tuple[Path, Path]:
        """``<stem>.key`` and ``<stem>.crt`` in ``folder``: (key, cert)."""
        key, cert = folder / f"{stem}.key", folder / f"{stem}.crt"
        key.write_bytes(self.key_pem)
        cert.write_bytes(self.cert_pem)
        return key, cert


def make_identity(common_name: str = "composer test db", *, bits: int = 2048) -> SbKeys:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
            .not_valid_after(datetime.datetime(2049, 12, 31, tzinfo=datetime.UTC))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return SbKeys(SigningIdentity(key, cert), key_pem,
                        cert.public_bytes(serialization.Encoding.PEM))
