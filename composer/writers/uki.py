"""Unified kernel images: an EFI stub with the kernel, initramfs and command line added,
laid out as the UAPI UKI specification and systemd's ukify lay them out.

The stub (systemd-boot's ``linux<arch>.efi.stub``, shipped by Alpine's ``gummiboot``
package) finds its payload in PE sections named ``.osrel``, ``.cmdline``, ``.initrd``
and ``.linux``. What :func:`build_uki` does, each as ukify does it:

* what follows the stub's last section is dropped: the COFF symbol and string tables
  (stubs built with older toolchains keep them at the end of the file, where an image
  has no use for them) and any other bytes no section covers, which firmware never
  loads. So no byte lies outside a section: Authenticode tools hash images section by
  section, and a gap makes ``sbsign`` warn and ``osslsigncode`` disagree with it;
* the new sections follow the stub's, each at the next multiple of the stub's
  SectionAlignment in memory and of its FileAlignment in the file (or of ``align``: a
  larger alignment is padded inside the preceding section's raw data, so the sections
  stay contiguous); ``.linux`` comes last and is flagged as code, with its VirtualSize
  the kernel's own SizeOfImage, so the kernel can decompress in place;
* SizeOfImage, SizeOfCode and SizeOfInitializedData are recomputed; the PE checksum is
  computed over the result (see :func:`pe_checksum`).

No timestamp is invented: the stub's own header fields are kept, so the result depends
on the inputs alone.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from composer.errors import OutputError

PE_MACHINES = {0x8664: "x86_64", 0xAA64: "aarch64"}
"""COFF machine types of the stubs we accept, by the Alpine arch they boot."""

_SECTION_HEADER = struct.Struct("<8sIIIIIIHHI")
_SCN_CODE = 0x00000020
_SCN_INITIALIZED_DATA = 0x00000040
_SCN_MEM_READ = 0x40000000
_LOCAL_SYMS_STRIPPED = 0x0008
_SYMBOL_SIZE = 18
_SECURITY_DIRECTORY = 4
LINUX = ".linux"


@dataclass(frozen=True)
class PeSection:
    """One section header of a PE image."""

    name: str
    virtual_size: int
    virtual_address: int
    raw_size: int
    raw_offset: int
    characteristics: int


@dataclass(frozen=True)
class PeLayout:
    """Where a PE32+ image's headers are (file offsets) and its alignments."""

    coff: int
    optional: int
    table: int
    count: int
    file_align: int
    section_align: int
    size_of_headers: int


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def pe_layout(image: bytes, source: str = "PE image") -> PeLayout:
    """The headers of a PE32+ image, checked to lie inside it."""
    if len(image) < 0x40 or image[:2] != b"MZ":
        raise OutputError(f"{source}: not a PE image (no MZ header)")
    pe = struct.unpack_from("<I", image, 0x3C)[0]
    if image[pe:pe + 4] != b"PE\0\0":
        raise OutputError(f"{source}: not a PE image (no PE signature)")
    coff = pe + 4
    count, optional_size = struct.unpack_from("<2xH12xH", image, coff)
    optional = coff + 20
    if len(image) < optional + 112 or struct.unpack_from("<H", image, optional)[0] != 0x20B:
        raise OutputError(f"{source}: not a PE32+ image")
    section_align, file_align = struct.unpack_from("<II", image, optional + 32)
    size_of_headers = struct.unpack_from("<I", image, optional + 60)[0]
    table = optional + optional_size
    if not file_align or not section_align or len(image) < table + 40 * count:
        raise OutputError(f"{source}: damaged PE headers")
    return PeLayout(coff, optional, table, count, file_align, section_align, size_of_headers)


def pe_sections(image: bytes, *, source: str = "PE image") -> list[PeSection]:
    """The section headers of ``image``, in table order."""
    layout = pe_layout(image, source)
    found = []
    for i in range(layout.count):
        name, vsize, va, raw_size, raw_ptr, _, _, _, _, flags = _SECTION_HEADER.unpack_from(
            image, layout.table + 40 * i)
        found.append(PeSection(name.rstrip(b"\0").decode("ascii", "replace"), vsize, va,
                               raw_size, raw_ptr, flags))
    return found


def stub_arch(stub: bytes, *, source: str = "EFI stub") -> str:
    """The arch an EFI stub runs on (``x86_64``, ``aarch64``), or an error naming the machine."""
    layout = pe_layout(stub, source)
    machine = struct.unpack_from("<H", stub, layout.coff)[0]
    if machine not in PE_MACHINES:
        raise OutputError(f"{source}: PE machine {machine:#06x} is not one composer can boot")
    return PE_MACHINES[machine]


def pe_checksum(image: bytes, checksum_offset: int) -> int:
    """The PE optional header CheckSum of ``image``: the 16-bit one's-complement-style sum
    of the file (its CheckSum field read as zero), folded, plus the file length.

    Folding the carries keeps the sum's value modulo 0xFFFF, and 65536 is 1 modulo 0xFFFF,
    so the sum of the little-endian words is the whole file read as one little-endian
    number, modulo 0xFFFF (0xFFFF rather than 0 for a file that is not all zeros): one pass
    in C instead of a Python sum over millions of words."""
    data = bytearray(image)
    data[checksum_offset:checksum_offset + 4] = bytes(4)
    value = int.from_bytes(data, "little")
    folded = value % 0xFFFF or (0xFFFF if value else 0)
    return (folded + len(image)) & 0xFFFFFFFF


def _kernel_image_size(kernel: bytes) -> int:
    """The kernel's own SizeOfImage (its memory footprint once decompressed, for an EFI-stub
    kernel), or 0 when the kernel is not a PE image."""
    try:
        layout = pe_layout(kernel, "kernel")
    except OutputError:
        return 0
    return int(struct.unpack_from("<I", kernel, layout.optional + 56)[0])


def _drop_tail(stub: bytes, layout: PeLayout, source: str) -> bytes:
    """The stub up to the end of its last section, without its COFF symbol table and the
    header fields that point at it. Nothing after the last section is loaded by firmware:
    a symbol table, or text no section header covers (systemd 252's arm64 stub keeps its
    SBAT text there), would only be a gap before the sections we add."""
    sections = pe_sections(stub, source=source)
    end = _align(max((s.raw_offset + s.raw_size for s in sections if s.raw_size),
                     default=layout.size_of_headers), layout.file_align)
    symbols = struct.unpack_from("<I", stub, layout.coff + 8)[0]
    out = bytearray(stub[:end].ljust(end, b"\0"))
    if symbols:
        if symbols < end:
            raise OutputError(f"{source}: the COFF symbol table lies inside the sections")
        struct.pack_into("<II", out, layout.coff + 8, 0, 0)
        flags = struct.unpack_from("<H", out, layout.coff + 18)[0]
        struct.pack_into("<H", out, layout.coff + 18, flags | _LOCAL_SYMS_STRIPPED)
    return bytes(out)


def build_uki(stub: bytes, sections: Sequence[tuple[str, bytes]], *, align: int = 0,
              source: str = "EFI stub") -> bytes:
    """The stub with ``sections`` (name, data) added in the order given, except ``.linux``,
    which goes last. ``align`` (bytes, 0 for the stub's FileAlignment) is where each new
    section's data may start in the file."""
    layout = pe_layout(stub, source)
    security = struct.unpack_from("<II", stub, layout.optional + 112 + 8 * _SECURITY_DIRECTORY)
    if security[0] or security[1]:
        raise OutputError(f"{source}: the stub is signed; sign the UKI instead")
    ordered = ([s for s in sections if s[0] != LINUX] + [s for s in sections if s[0] == LINUX])
    table_end = layout.table + 40 * layout.count
    if table_end + 40 * len(ordered) > layout.size_of_headers:
        raise OutputError(f"{source}: no room for {len(ordered)} more PE section headers")
    out = bytearray(_drop_tail(stub, layout, source))
    existing = pe_sections(stub, source=source)
    last = max(existing, key=lambda s: s.virtual_address)
    next_va = _align(last.virtual_address + max(last.virtual_size, last.raw_size),
                     layout.section_align)
    file_align = max(layout.file_align, _align(align, layout.file_align))
    previous = max(range(layout.count), key=lambda i: existing[i].raw_offset)
    code_size, data_size = struct.unpack_from("<II", out, layout.optional + 4)
    for index, (name, data) in enumerate(ordered, layout.count):
        encoded = name.encode("ascii")
        if len(encoded) > 8:
            raise OutputError(f"PE section name {name!r} is longer than 8 bytes")
        padding = _align(len(out), file_align) - len(out)
        if padding:
            # Pad inside the preceding section's raw data: no byte outside a section.
            header = layout.table + 40 * previous
            raw_size, flags = struct.unpack_from("<I16xI", out, header + 16)
            struct.pack_into("<I", out, header + 16, raw_size + padding)
            if flags & _SCN_CODE:
                code_size += padding
            elif flags & _SCN_INITIALIZED_DATA:
                data_size += padding
            out.extend(bytes(padding))
        raw_size = _align(len(data), layout.file_align)
        virtual_size = len(data)
        if name == LINUX:
            virtual_size = max(virtual_size, _kernel_image_size(data))
            flags = _SCN_CODE | _SCN_MEM_READ
            code_size += raw_size
        else:
            flags = _SCN_INITIALIZED_DATA | _SCN_MEM_READ
            data_size += raw_size
        _SECTION_HEADER.pack_into(out, layout.table + 40 * index, encoded, virtual_size, next_va,
                                  raw_size, len(out), 0, 0, 0, 0, flags)
        out.extend(data)
        out.extend(bytes(raw_size - len(data)))
        next_va = _align(next_va + virtual_size, layout.section_align)
        previous = index
    struct.pack_into("<H", out, layout.coff + 2, layout.count + len(ordered))
    struct.pack_into("<II", out, layout.optional + 4, code_size, data_size)
    struct.pack_into("<I", out, layout.optional + 56, next_va)  # SizeOfImage
    struct.pack_into("<I", out, layout.optional + 64, pe_checksum(bytes(out), layout.optional + 64))
    return bytes(out)
