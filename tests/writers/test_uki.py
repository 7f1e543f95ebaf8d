"""UKI assembly as ukify lays it out; objdump, sbverify and osslsigncode find it clean,
signed and unsigned."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from composer.errors import OutputError
from composer.writers.uki import build_uki, pe_checksum, pe_sections, stub_arch
from tests.helpers.bootpkgs import STUB_FILE
from tests.helpers.clock import another_clock

KERNEL_IMAGE_SIZE = 0x40000
OSREL = b"ID=alpine\n"
CMDLINE = b"console=ttyS0"
INITRD = b"I" * 70001


def _stub() -> bytes:
    path = Path(STUB_FILE)
    if not path.exists():
        pytest.skip(f"{STUB_FILE} is missing (apt-get install systemd-boot-efi)")
    return path.read_bytes()


def _kernel(size_of_image: int = KERNEL_IMAGE_SIZE) -> bytes:
    """The PE header of an EFI-stub kernel (SizeOfImage is what matters) and some payload."""
    head = bytearray(0x200)
    head[:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, 0x40)
    head[0x40:0x44] = b"PE\0\0"
    struct.pack_into("<HH12xH", head, 0x44, 0x8664, 0, 240)
    struct.pack_into("<H", head, 0x58, 0x20B)
    struct.pack_into("<II", head, 0x58 + 32, 512, 512)
    struct.pack_into("<I", head, 0x58 + 56, size_of_image)
    return bytes(head) + b"K" * 9000


def _payload() -> list[tuple[str, bytes]]:
    # .linux given first: it still goes last.
    return [(".linux", _kernel()), (".osrel", OSREL), (".cmdline", CMDLINE), (".initrd", INITRD)]


def _header(image: bytes) -> tuple[int, int]:
    pe = struct.unpack_from("<I", image, 0x3C)[0]
    return pe + 4, pe + 24


def _need(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (apt-get install {package})")


def _run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.parametrize("align", [0, 2048])
def test_layout_is_ukifys(align: int) -> None:
    stub = _stub()
    image = build_uki(stub, _payload(), align=align)
    sections = pe_sections(image)
    stub_sections = pe_sections(stub)
    assert [s.name for s in sections] == [s.name for s in stub_sections] + [
        ".osrel", ".cmdline", ".initrd", ".linux"]
    added = {s.name: s for s in sections[len(stub_sections):]}
    for name, data in _payload():
        section = added[name]
        assert image[section.raw_offset:section.raw_offset + len(data)] == data
        assert section.raw_offset % max(align, 512) == 0
        assert section.characteristics == (0x40000020 if name == ".linux" else 0x40000040)
        if name != ".linux":
            assert section.virtual_size == len(data)
    # .linux can decompress in place: its memory size is the kernel's own SizeOfImage.
    assert added[".linux"].virtual_size == KERNEL_IMAGE_SIZE
    # Contiguous: no byte lies outside a section after the headers, none after the last.
    by_offset = sorted(sections, key=lambda s: s.raw_offset)
    for one, two in zip(by_offset, by_offset[1:], strict=False):
        assert one.raw_offset + one.raw_size == two.raw_offset, (one, two)
    assert by_offset[-1].raw_offset + by_offset[-1].raw_size == len(image)
    assert by_offset[-1].name == ".linux"
    # Memory: ascending, section-aligned; SizeOfImage ends after .linux.
    for one, two in zip(sections, sections[1:], strict=False):
        assert two.virtual_address >= one.virtual_address + one.virtual_size
    coff, optional = _header(image)
    symbols, count, _, flags = struct.unpack_from("<IIHH", image, coff + 8)
    assert (symbols, count) == (0, 0) and flags & 0x0008
    size_of_image = struct.unpack_from("<I", image, optional + 56)[0]
    linux = added[".linux"]
    assert size_of_image == -(-(linux.virtual_address + linux.virtual_size) // 512) * 512
    code, data = struct.unpack_from("<II", image, optional + 4)
    stub_code, stub_data = struct.unpack_from("<II", stub, _header(stub)[1] + 4)
    # Padding for the alignment grew the stub's last section (initialized data).
    grown = sum(s.raw_size - t.raw_size for s, t in zip(sections, stub_sections, strict=False))
    assert grown == (0 if align == 0 else 1024)
    assert code == stub_code + linux.raw_size
    assert data == stub_data + grown + sum(s.raw_size for n, s in added.items() if n != ".linux")
    assert struct.unpack_from("<I", image, optional + 64)[0] == pe_checksum(image, optional + 64)
    assert build_uki(stub, _payload(), align=align) == image


def test_checksum_is_the_pe_one() -> None:
    """The stub's own CheckSum (written by binutils) is what pe_checksum computes."""
    stub = _stub()
    optional = _header(stub)[1]
    assert pe_checksum(stub, optional + 64) == struct.unpack_from("<I", stub, optional + 64)[0]


def test_tools_find_it_clean(tmp_path: Path) -> None:
    for tool, package in (("objdump", "binutils"), ("sbverify", "sbsigntool"),
                          ("osslsigncode", "osslsigncode")):
        _need(tool, package)
    path = tmp_path / "uki.efi"
    path.write_bytes(build_uki(_stub(), _payload(), align=2048))
    objdump = _run("objdump", "-h", path)
    assert objdump.stderr == ""
    rows = objdump.stdout.splitlines()
    linux = next(i for i, row in enumerate(rows) if row.split()[1:2] == [".linux"])
    # objdump shows the smaller of memory and file size: the kernel's file size, aligned.
    assert rows[linux].split()[2] == f"{-(-len(_kernel()) // 512) * 512:08x}"
    assert "CODE" in rows[linux + 1]
    sbverify = _run("sbverify", "--list", path)
    assert (sbverify.stdout + sbverify.stderr).strip() == "No signature table present"
    # Unsigned, osslsigncode fails for want of a signature, and finds nothing else wrong: one
    # "PE checksum" line (the stored one matches), no warning, no gap, no digest mismatch.
    verify = _run("osslsigncode", "verify", path, check=False)
    lines = (verify.stdout + verify.stderr).splitlines()
    assert sorted(lines) == sorted(["No signature found", "Unable to extract existing signature",
                                    f"PE checksum   : {_checksum(path):08X}", "Failed"]), lines


def _checksum(path: Path) -> int:
    data = path.read_bytes()
    return int(struct.unpack_from("<I", data, _header(data)[1] + 64)[0])


def test_sbsign_signs_it_and_both_verifiers_agree(tmp_path: Path) -> None:
    """The base of Secure Boot: a throwaway db key signs the UKI; sbverify and osslsigncode
    (which hash the image two different ways) both accept the signature."""
    for tool, package in (("openssl", "openssl"), ("sbsign", "sbsigntool"),
                          ("sbverify", "sbsigntool"), ("osslsigncode", "osslsigncode")):
        _need(tool, package)
    key, cert = tmp_path / "db.key", tmp_path / "db.crt"
    _run("openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
         "-days", "3650", "-subj", "/CN=alpine-composer test db/", "-keyout", key, "-out", cert)
    unsigned, signed = tmp_path / "uki.efi", tmp_path / "uki.signed.efi"
    unsigned.write_bytes(build_uki(_stub(), _payload(), align=2048))
    sign = _run("sbsign", "--key", key, "--cert", cert, "--output", signed, unsigned)
    assert "warning" not in (sign.stdout + sign.stderr).lower()
    assert _run("sbverify", "--cert", cert, signed).stdout.strip() == "Signature verification OK"
    verify = _run("osslsigncode", "verify", "-CAfile", cert, signed)
    digests = [line.split(":", 1)[1].split()[0] for line in verify.stdout.splitlines()
               if line.startswith(("Current message digest", "Calculated message digest"))]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert "Signature verification: ok" in verify.stdout and "Succeeded" in verify.stdout
    assert "Warning" not in verify.stdout + verify.stderr


def test_same_bytes_under_another_clock() -> None:
    stub = _stub()
    image = build_uki(stub, _payload(), align=2048)
    with another_clock():
        assert build_uki(stub, _payload(), align=2048) == image


def test_stub_arch_and_bad_stubs() -> None:
    stub = _stub()
    assert stub_arch(stub) == "x86_64"
    pe = struct.unpack_from("<I", stub, 0x3C)[0]
    arm = bytearray(stub)
    struct.pack_into("<H", arm, pe + 4, 0xAA64)
    assert stub_arch(bytes(arm)) == "aarch64"
    with pytest.raises(OutputError, match=r"^stub.efi: not a PE image \(no MZ header\)$"):
        stub_arch(b"\0" * 100, source="stub.efi")
    with pytest.raises(OutputError, match="no room for 9 more PE section headers"):
        build_uki(stub, [(f".s{i}", b"x") for i in range(9)])


def test_signed_stubs_are_refused() -> None:
    stub = _stub()
    signed = bytearray(stub)
    struct.pack_into("<II", signed, _header(stub)[1] + 112 + 8 * 4, len(stub), 8)
    with pytest.raises(OutputError, match="^stub.efi: the stub is signed; sign the UKI instead$"):
        build_uki(bytes(signed), [(".cmdline", CMDLINE)], source="stub.efi")


def test_bytes_after_the_last_section_are_dropped(tmp_path: Path) -> None:
    """As in systemd 252's arm64 stub, which keeps its SBAT text after its last section,
    outside any section: firmware never loads it, and it would be a gap."""
    stub = _stub()
    coff = _header(stub)[0]
    end = max(s.raw_offset + s.raw_size for s in pe_sections(stub))
    tail = bytearray(stub[:end] + b"sbat,1,SBAT Version\n" * 40)
    flags = struct.unpack_from("<H", stub, coff + 18)[0]
    struct.pack_into("<IIHH", tail, coff + 8, 0, 0, 240, flags | 0x0008)
    image = build_uki(bytes(tail), _payload())
    assert image == build_uki(stub, _payload())
    assert b"SBAT Version\n" * 2 not in image
    _need("sbverify", "sbsigntool")
    path = tmp_path / "uki.efi"
    path.write_bytes(image)
    listed = _run("sbverify", "--list", path)
    assert (listed.stdout + listed.stderr).strip() == "No signature table present"


def _checksum_by_words(image: bytes, offset: int) -> int:
    """The PE checksum as the specification describes it: add the 16-bit words, folding
    each carry back in."""
    data = bytearray(image)
    data[offset:offset + 4] = bytes(4)
    if len(data) % 2:
        data.append(0)
    total = 0
    for (word,) in struct.iter_unpack("<H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return (total + len(image)) & 0xFFFFFFFF


@given(st.binary(max_size=4096), st.integers(min_value=0, max_value=4092))
def test_pe_checksum_equals_the_word_by_word_sum(image: bytes, offset: int) -> None:
    offset = min(offset, max(0, len(image) - 4)) & ~1
    assert pe_checksum(image, offset) == _checksum_by_words(image, offset)


@pytest.mark.parametrize("image", [b"", bytes(10), b"\xff\xff", b"\xff\xff" * 3 + b"\x01",
                                   b"\x00\x00\x00\x00\xff\xff"])
def test_pe_checksum_edge_cases(image: bytes) -> None:
    assert pe_checksum(image, 0) == _checksum_by_words(image, 0)
