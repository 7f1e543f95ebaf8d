"""UKI assembly: objdump sees the stub's sections plus ours, at aligned addresses."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from composer.errors import OutputError
from composer.writers.uki import build_uki, stub_arch
from tests.helpers.bootpkgs import STUB_FILE


def _stub() -> bytes:
    path = Path(STUB_FILE)
    if not path.exists():
        pytest.skip(f"{STUB_FILE} is missing (apt-get install systemd-boot-efi)")
    return path.read_bytes()


def _sections(image: bytes) -> dict[str, tuple[int, int, int, int]]:
    pe = struct.unpack_from("<I", image, 0x3C)[0]
    count, optional_size = struct.unpack_from("<2xH12xH", image, pe + 4)
    table = pe + 24 + optional_size
    found = {}
    for i in range(count):
        name, vsize, va, raw_size, raw_ptr = struct.unpack_from("<8sIIII", image, table + 40 * i)
        found[name.rstrip(b"\0").decode()] = (vsize, va, raw_size, raw_ptr)
    return found


def test_sections_are_appended_and_readable(tmp_path: Path) -> None:
    stub = _stub()
    payload = [(".osrel", b"ID=alpine\n"), (".cmdline", b"console=ttyS0"),
               (".linux", b"K" * 5000), (".initrd", b"I" * 70001)]
    image = build_uki(stub, payload)
    sections = _sections(image)
    assert list(sections)[-4:] == [".osrel", ".cmdline", ".linux", ".initrd"]
    for name, data in payload:
        vsize, va, raw_size, raw_ptr = sections[name]
        assert image[raw_ptr:raw_ptr + vsize] == data and va % 512 == 0 and raw_ptr % 512 == 0
    size_of_image = struct.unpack_from("<I", image, struct.unpack_from("<I", image, 0x3C)[0] + 24 + 56)[0]
    last = sections[".initrd"]
    assert size_of_image >= last[1] + last[0]
    assert image[:len(stub)].startswith(stub[:0x80])
    assert build_uki(stub, payload) == image
    if shutil.which("objdump"):
        path = tmp_path / "uki.efi"
        path.write_bytes(image)
        headers = subprocess.run(["objdump", "-h", str(path)], capture_output=True, text=True,
                                 check=True).stdout
        assert all(name in headers for name, _ in payload)


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
