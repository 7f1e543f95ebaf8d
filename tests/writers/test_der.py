"""The DER encodings the Authenticode signer builds, against X.690's examples and values
the cryptography package encodes itself."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from composer.writers.der import context, integer, octet_string, oid, raw_contents, sequence, set_of


@pytest.mark.parametrize(("value", "encoded"), [
    (0, "020100"), (1, "020101"), (127, "02017f"), (128, "02020080"), (256, "02020100"),
    (0x1234567890ABCDEF, "02081234567890abcdef"), (0xFF << 56, "020900ff00000000000000"),
])
def test_integer(value: int, encoded: str) -> None:
    assert integer(value).hex() == encoded


def test_oid_matches_cryptography() -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]).public_bytes()
    assert oid("2.5.4.3") in name
    assert oid("2.16.840.1.101.3.4.2.1").hex() == "0609608648016503040201"
    assert oid("1.3.6.1.4.1.311.2.1.4").hex() == "060a2b060104018237020104"


@pytest.mark.parametrize(("size", "header"), [(0, "0400"), (127, "047f"), (128, "048180"),
                                              (255, "0481ff"), (300, "0482012c"),
                                              (70000, "0483011170")])
def test_lengths(size: int, header: str) -> None:
    element = octet_string(bytes(size))
    assert element[:len(header) // 2].hex() == header
    assert raw_contents(element) == bytes(size)


def test_set_of_sorts_and_context_tags() -> None:
    assert set_of([b"\x02\x01\x05", b"\x02\x01\x01"]).hex() == "3106020101020105"
    assert sequence().hex() == "3000"
    assert context(0, b"\x05\x00").hex() == "a0020500"
    assert context(0, b"ab", constructed=False).hex() == "80026162"
