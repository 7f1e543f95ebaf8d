"""Authenticode signatures for PE/EFI images (a unified kernel image for Secure Boot).

Written here rather than run through ``sbsign`` so the signed bytes depend on the inputs
alone: RSA PKCS#1 v1.5 with SHA-256 is deterministic, and the PKCS#7 SignedData carries
no signing time (sbsign 0.9 and osslsigncode add one), so equal image, key and
certificate give an equal signed image on every host. The ``cryptography`` package does
the RSA arithmetic and parses the certificate; the ASN.1 around them is a few DER
structures built by hand (:mod:`composer.writers.der`).

What is signed, as Microsoft's "Windows Authenticode Portable Executable Signature
Format" and EDK2's ``DxeImageVerificationLib`` define it:

* the image digest: SHA-256 over the headers up to SizeOfHeaders without the CheckSum
  field and the certificate-table data directory entry, then each section's raw data in
  file order, then whatever lies after the sections up to the certificate table;
* an ``SpcIndirectDataContent`` holding that digest, wrapped in a PKCS#7 SignedData
  with the signer's certificate and one SignerInfo whose authenticated attributes are
  the content type and the digest of the SpcIndirectDataContent;
* the SignedData goes into a WIN_CERTIFICATE appended at an 8-byte aligned end of the
  file, the certificate-table entry points at it, and the CheckSum is recomputed.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from composer.errors import OutputError
from composer.writers.der import (
    context,
    integer,
    null,
    octet_string,
    oid,
    raw_contents,
    sequence,
    set_of,
)
from composer.writers.uki import pe_checksum, pe_layout, pe_sections

__all__ = ["SigningIdentity", "authenticode_digest", "sign_pe"]

_SECURITY_ENTRY = 112 + 8 * 4
"""Offset of the certificate-table data directory entry in a PE32+ optional header."""
_CHECKSUM = 64
_WIN_CERT_REVISION = 0x0200
_WIN_CERT_TYPE_PKCS_SIGNED_DATA = 0x0002

_SIGNED_DATA = "1.2.840.113549.1.7.2"
_SHA256 = "2.16.840.1.101.3.4.2.1"
_RSA = "1.2.840.113549.1.1.1"
_CONTENT_TYPE = "1.2.840.113549.1.9.3"
_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
_SPC_INDIRECT_DATA = "1.3.6.1.4.1.311.2.1.4"
_SPC_PE_IMAGE_DATA = "1.3.6.1.4.1.311.2.1.15"
_SPC_SP_OPUS_INFO = "1.3.6.1.4.1.311.2.1.12"


@dataclass(frozen=True)
class SigningIdentity:
    """An RSA key and the X.509 certificate of its public key (checked to match when
    loaded, see :mod:`composer.secure_boot`)."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    def __repr__(self) -> str:
        return f"SigningIdentity(cert={self.cert.subject.rfc4514_string()!r})"

    def cert_pem(self) -> bytes:
        """The certificate alone, PEM-encoded: what a build writes beside a signed image for
        enrolling (whatever else the user's certificate file held is left out)."""
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class _Pe:
    optional: int
    size_of_headers: int
    sections: tuple[tuple[int, int], ...]
    """(PointerToRawData, SizeOfRawData) of every section with file data, in file order."""


def _parse(image: bytes, source: str) -> _Pe:
    layout = pe_layout(image, source)
    optional_size = layout.table - layout.optional
    directories = struct.unpack_from("<I", image, layout.optional + 108)[0]
    if optional_size < _SECURITY_ENTRY + 8 or directories < 5:
        raise OutputError(f"{source}: the PE image has no certificate-table directory entry")
    if layout.size_of_headers > len(image):
        raise OutputError(f"{source}: damaged PE headers")
    sections = []
    for index, section in enumerate(pe_sections(image, source=source)):
        if section.raw_size:
            if (section.raw_offset < layout.size_of_headers
                    or section.raw_offset + section.raw_size > len(image)):
                raise OutputError(f"{source}: section {index} lies outside the file")
            sections.append((section.raw_offset, section.raw_size))
    return _Pe(layout.optional, layout.size_of_headers, tuple(sorted(sections)))


def authenticode_digest(image: bytes, *, source: str = "PE image") -> bytes:
    """The SHA-256 Authenticode digest of an unsigned ``image`` (its length a multiple of 8)."""
    pe = _parse(image, source)
    checksum = pe.optional + _CHECKSUM
    security = pe.optional + _SECURITY_ENTRY
    digest = hashlib.sha256()
    digest.update(image[:checksum])
    digest.update(image[checksum + 4:security])
    digest.update(image[security + 8:pe.size_of_headers])
    hashed = pe.size_of_headers
    for offset, size in pe.sections:
        digest.update(image[offset:offset + size])
        hashed += size
    if len(image) > hashed:
        # EDK2 hashes from the byte count hashed so far to the certificate table; the
        # sections of an image without gaps end exactly there.
        digest.update(image[hashed:])
    return digest.digest()


_SHA256_ALGORITHM = sequence(oid(_SHA256), null())


def _indirect_data(image_digest: bytes) -> bytes:
    """SpcIndirectDataContent: "this is a PE image" and its digest."""
    obsolete = context(0, "<<<Obsolete>>>".encode("utf-16-be"), constructed=False)
    pe_image_data = sequence(b"\x03\x01\x00",  # SpcPeImageFlags: an empty BIT STRING
                             context(0, context(2, obsolete)))
    return sequence(sequence(oid(_SPC_PE_IMAGE_DATA), pe_image_data),
                    sequence(_SHA256_ALGORITHM, octet_string(image_digest)))


def _signed_data(image_digest: bytes, identity: SigningIdentity) -> bytes:
    indirect = _indirect_data(image_digest)
    attributes = [
        sequence(oid(_CONTENT_TYPE), set_of([oid(_SPC_INDIRECT_DATA)])),
        sequence(oid(_SPC_SP_OPUS_INFO), set_of([sequence()])),
        # PKCS#7 digests the content octets of the content, without its tag and length.
        sequence(oid(_MESSAGE_DIGEST),
                 set_of([octet_string(hashlib.sha256(raw_contents(indirect)).digest())])),
    ]
    signed_attributes = set_of(attributes)
    signature = identity.key.sign(signed_attributes, padding.PKCS1v15(), hashes.SHA256())
    cert = identity.cert
    signer_info = sequence(
        integer(1),
        sequence(cert.issuer.public_bytes(), integer(cert.serial_number)),
        _SHA256_ALGORITHM,
        context(0, raw_contents(signed_attributes)),
        sequence(oid(_RSA), null()),
        octet_string(signature),
    )
    signed_data = sequence(
        integer(1),
        set_of([_SHA256_ALGORITHM]),
        sequence(oid(_SPC_INDIRECT_DATA), context(0, indirect)),
        context(0, cert.public_bytes(serialization.Encoding.DER)),
        set_of([signer_info]),
    )
    return sequence(oid(_SIGNED_DATA), context(0, signed_data))


def sign_pe(image: bytes, identity: SigningIdentity, *, source: str = "PE image") -> bytes:
    """``image`` with an Authenticode signature by ``identity`` appended. The image must be
    unsigned; its end is padded with zeros to a multiple of 8 bytes first (the padding is
    part of what is signed, as sbsign and EDK2 treat it)."""
    pe = _parse(image, source)
    security = pe.optional + _SECURITY_ENTRY
    if any(struct.unpack_from("<II", image, security)):
        raise OutputError(f"{source}: already signed (its certificate table is not empty)")
    out = bytearray(image)
    out.extend(bytes(-len(out) % 8))
    blob = _signed_data(authenticode_digest(bytes(out), source=source), identity)
    table_offset = len(out)
    # As sbsign writes it: the WIN_CERTIFICATE's length is its own, the directory entry's
    # size includes the padding to the next 8-byte boundary.
    length = 8 + len(blob)
    out.extend(struct.pack("<IHH", length, _WIN_CERT_REVISION, _WIN_CERT_TYPE_PKCS_SIGNED_DATA))
    out.extend(blob)
    out.extend(bytes(-len(out) % 8))
    struct.pack_into("<II", out, security, table_offset, len(out) - table_offset)
    checksum = pe.optional + _CHECKSUM
    struct.pack_into("<I", out, checksum, pe_checksum(bytes(out), checksum))
    return bytes(out)
