"""Authenticode signing of unified kernel images, checked by sbverify and osslsigncode."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from composer.errors import OutputError
from composer.writers.authenticode import authenticode_digest, sign_pe
from composer.writers.uki import build_uki, pe_checksum
from tests.helpers.bootpkgs import STUB_FILE, Unavailable, debian_kernel
from tests.helpers.sbkeys import SbKeys, make_identity


@pytest.fixture(scope="module")
def identity() -> SbKeys:
    return make_identity()


@pytest.fixture(scope="module")
def stub() -> bytes:
    if not Path(STUB_FILE).is_file():
        pytest.skip(f"{STUB_FILE} is absent (apt-get install systemd-boot-efi)")
    return Path(STUB_FILE).read_bytes()


@pytest.fixture(scope="module")
def uki(stub: bytes, request: pytest.FixtureRequest) -> bytes:
    """A real UKI: systemd-boot's stub with Debian's cloud kernel and a small initrd."""
    try:
        kernel = debian_kernel(request.config.cache.mkdir("debian-kernel"))
    except Unavailable as exc:
        pytest.skip(str(exc))
    return build_uki(stub, [(".cmdline", b"console=ttyS0 quiet"),
                            (".initrd", bytes(range(256)) * 64), (".linux", kernel.vmlinuz)])


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install {package})")
    return path


def sbverify(image: bytes, cert: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "image.efi"
    path.write_bytes(image)
    return subprocess.run([_tool("sbverify", "sbsigntool"), "--cert", str(cert), str(path)],
                          capture_output=True, text=True, check=False)


def osslsigncode_verify(image: bytes, cert: Path,
                        tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "image.efi"
    path.write_bytes(image)
    return subprocess.run([_tool("osslsigncode", "osslsigncode"), "verify", "-CAfile", str(cert),
                           "-in", str(path)], capture_output=True, text=True, check=False)


def test_signed_uki_passes_sbverify_and_osslsigncode(uki: bytes, identity: SbKeys,
                                                     tmp_path: Path) -> None:
    _, cert = identity.write(tmp_path)
    signed = sign_pe(uki, identity.identity)
    checked = sbverify(signed, cert, tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "Signature verification OK" in checked.stdout
    checked = osslsigncode_verify(signed, cert, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Signature verification: ok" in checked.stdout
    digest = authenticode_digest(uki).hex().upper()
    assert f"Current message digest    : {digest}" in checked.stdout
    assert f"Calculated message digest : {digest}" in checked.stdout


def test_digest_is_the_one_sbsign_signs(uki: bytes, identity: SbKeys,
                                        tmp_path: Path) -> None:
    """sbsign (another implementation) puts the same image digest into its signature."""
    key, cert = identity.write(tmp_path)
    (tmp_path / "uki.efi").write_bytes(uki)
    subprocess.run([_tool("sbsign", "sbsigntool"), "--key", str(key), "--cert", str(cert),
                    "--output", str(tmp_path / "sbsigned.efi"), str(tmp_path / "uki.efi")],
                   check=True, capture_output=True)
    checked = osslsigncode_verify((tmp_path / "sbsigned.efi").read_bytes(), cert, tmp_path)
    assert f"Current message digest    : {authenticode_digest(uki).hex().upper()}" \
        in checked.stdout


def test_signing_twice_gives_the_same_bytes(uki: bytes, identity: SbKeys) -> None:
    first = sign_pe(uki, identity.identity)
    assert sign_pe(uki, identity.identity) == first
    assert first[:len(uki)] != uki  # the certificate-table entry and the checksum changed


def test_signature_layout(uki: bytes, identity: SbKeys) -> None:
    signed = sign_pe(uki, identity.identity)
    optional = struct.unpack_from("<I", uki, 0x3C)[0] + 24
    offset, size = struct.unpack_from("<II", signed, optional + 144)
    assert offset == len(uki) and offset % 8 == 0
    assert offset + size == len(signed) and size % 8 == 0
    length, revision, kind = struct.unpack_from("<IHH", signed, offset)
    assert (revision, kind) == (0x0200, 0x0002)
    assert size - 8 < length <= size
    assert struct.unpack_from("<I", signed, optional + 64)[0] == pe_checksum(signed, optional + 64)
    assert identity.key_pem not in signed
    assert identity.identity.cert.public_bytes(Encoding.DER) in signed


@pytest.mark.parametrize("where", ["kernel", "header", "initrd"])
def test_a_flipped_byte_fails_verification(uki: bytes, identity: SbKeys, tmp_path: Path,
                                           where: str) -> None:
    _, cert = identity.write(tmp_path)
    signed = bytearray(sign_pe(uki, identity.identity))
    at = {"kernel": len(uki) - 4096, "header": 0x4E, "initrd": uki.index(bytes(range(256)))}
    signed[at[where]] ^= 0x01
    checked = sbverify(bytes(signed), cert, tmp_path)
    assert checked.returncode != 0
    assert "Signature verification failed" in checked.stderr + checked.stdout
    assert osslsigncode_verify(bytes(signed), cert, tmp_path).returncode != 0


def test_another_certificate_fails_verification(uki: bytes, identity: SbKeys,
                                                tmp_path: Path) -> None:
    _, other = make_identity("someone else").write(tmp_path, "other")
    signed = sign_pe(uki, identity.identity)
    assert sbverify(signed, other, tmp_path).returncode != 0
    assert osslsigncode_verify(signed, other, tmp_path).returncode != 0


def test_trailing_bytes_and_an_odd_length(stub: bytes, identity: SbKeys,
                                           tmp_path: Path) -> None:
    """Bytes after the last section are signed too, and the end is padded to 8 bytes before
    the certificate table (as EDK2 and sbsign hash them)."""
    _, cert = identity.write(tmp_path)
    image = build_uki(stub, [(".linux", b"\x90" * 1001)]) + b"abc"
    signed = sign_pe(image, identity.identity)
    optional = struct.unpack_from("<I", image, 0x3C)[0] + 24
    assert struct.unpack_from("<I", signed, optional + 144)[0] == len(image) + 5
    assert signed[len(image):len(image) + 5] == bytes(5)
    assert sbverify(signed, cert, tmp_path).returncode == 0
    assert osslsigncode_verify(signed, cert, tmp_path).returncode == 0
    tampered = bytearray(signed)
    tampered[len(image) - 2] ^= 0x01
    assert sbverify(bytes(tampered), cert, tmp_path).returncode != 0


def test_signed_image_is_refused(uki: bytes, identity: SbKeys) -> None:
    with pytest.raises(OutputError, match=r"^UKI: already signed \(its certificate table is "
                                          r"not empty\)$"):
        sign_pe(sign_pe(uki, identity.identity), identity.identity, source="UKI")


def test_not_a_pe_image_is_refused(identity: SbKeys) -> None:
    with pytest.raises(OutputError, match=r"^UKI: not a PE image \(no MZ header\)$"):
        sign_pe(b"\x7fELF" + bytes(100), identity.identity, source="UKI")
