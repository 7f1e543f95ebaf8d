"""Unified kernel images: an EFI stub with the kernel, initramfs and command line appended.

The stub (systemd-boot's ``linux<arch>.efi.stub``, shipped by Alpine's ``gummiboot``
package) finds its payload in PE sections named ``.osrel``, ``.cmdline``, ``.linux``
and ``.initrd``. Adding them is plain PE surgery: new section headers in the spare
room after the existing table, the data appended at the file alignment, the
virtual addresses after the stub's last section. No timestamp or checksum is
invented: the stub's own header fields are kept, so the result depends on the
inputs alone.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from composer.errors import OutputError

PE_MACHINES = {0x8664: "x86_64", 0xAA64: "aarch64"}
"""COFF machine types of the stubs we accept, by the Alpine arch they boot."""

_SECTION_HEADER = struct.Struct("<8sIIIIIIHHI")
_DATA_READ = 0x40000040  # IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ


@dataclass(frozen=True)
class _Layout:
    coff: int
    optional: int
    sections: int
    count: int
    file_align: int
    section_align: int
    size_of_headers: int


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def _parse(stub: bytes, source: str) -> _Layout:
    if len(stub) < 0x40 or stub[:2] != b"MZ":
        raise OutputError(f"{source}: not a PE image (no MZ header)")
    pe = struct.unpack_from("<I", stub, 0x3C)[0]
    if stub[pe:pe + 4] != b"PE\0\0":
        raise OutputError(f"{source}: not a PE image (no PE signature)")
    coff = pe + 4
    count, optional_size = struct.unpack_from("<2xH12xH", stub, coff)
    optional = coff + 20
    if struct.unpack_from("<H", stub, optional)[0] != 0x20B:
        raise OutputError(f"{source}: not a PE32+ image")
    section_align, file_align = struct.unpack_from("<II", stub, optional + 32)
    size_of_headers = struct.unpack_from("<I", stub, optional + 60)[0]
    return _Layout(coff, optional, optional + optional_size, count, file_align, section_align,
                   size_of_headers)


def stub_arch(stub: bytes, *, source: str = "EFI stub") -> str:
    """The arch an EFI stub runs on (``x86_64``, ``aarch64``), or an error naming the machine."""
    layout = _parse(stub, source)
    machine = struct.unpack_from("<H", stub, layout.coff)[0]
    if machine not in PE_MACHINES:
        raise OutputError(f"{source}: PE machine {machine:#06x} is not one composer can boot")
    return PE_MACHINES[machine]


def build_uki(stub: bytes, sections: Sequence[tuple[str, bytes]], *,
              source: str = "EFI stub") -> bytes:
    """The stub with ``sections`` (name, data) appended, in the order given."""
    layout = _parse(stub, source)
    table_end = layout.sections + 40 * layout.count
    if table_end + 40 * len(sections) > layout.size_of_headers:
        raise OutputError(f"{source}: no room for {len(sections)} more PE section headers")
    out = bytearray(stub)
    next_va = 0
    file_end = _align(len(stub), layout.file_align)
    for i in range(layout.count):
        _, vsize, va, raw_size, raw_ptr, *_ = _SECTION_HEADER.unpack_from(stub,
                                                                          layout.sections + 40 * i)
        next_va = max(next_va, va + max(vsize, raw_size))
        file_end = max(file_end, _align(raw_ptr + raw_size, layout.file_align))
    next_va = _align(next_va, layout.section_align)
    out.extend(b"\0" * (file_end - len(out)))
    for index, (name, data) in enumerate(sections):
        encoded = name.encode("ascii")
        if len(encoded) > 8:
            raise OutputError(f"PE section name {name!r} is longer than 8 bytes")
        raw_size = _align(len(data), layout.file_align)
        header = _SECTION_HEADER.pack(encoded, len(data), next_va, raw_size, len(out), 0, 0, 0, 0,
                                      _DATA_READ)
        out[table_end + 40 * index:table_end + 40 * (index + 1)] = header
        out.extend(data)
        out.extend(b"\0" * (raw_size - len(data)))
        next_va = _align(next_va + len(data), layout.section_align)
    struct.pack_into("<H", out, layout.coff + 2, layout.count + len(sections))
    struct.pack_into("<I", out, layout.optional + 56, next_va)  # SizeOfImage
    return bytes(out)
