"""PE/COFF headers and section table (a UKI, an EFI loader) as fields.

Reads the DOS header's pointer, the COFF header, the optional header fields that a
UKI's layout decides (sizes, entry point, checksum) and each section's table entry
and content digest. Offsets are checked against the file before they are read.
"""

from __future__ import annotations

import hashlib
import struct

from composer.diff.report import Scalar
from composer.diff.source import Budget, Bytes

MAX_SECTIONS = 96
MAX_HEADER_OFFSET = 1 << 20
TEXT_SECTIONS = (".cmdline", ".osrel", ".uname")
"""A UKI's sections that are text, shown as text (a changed root hash is a changed line)."""
MAX_TEXT = 4096
_COFF = struct.Struct("<HHIIIHH")
_SECTION = struct.Struct("<8sIIIIIIHHI")


def looks_like_pe(head: bytes) -> bool:
    return head[:2] == b"MZ"


def pe_fields(image: Bytes, budget: Budget, title: str) -> dict[str, dict[str, Scalar]]:
    """``where`` → fields for the PE header and each section; ``{title: {"PE": "none"}}``-like
    notes for a file that is not a PE image."""
    if image.size < 64 or image.read_at(0, 2) != b"MZ":
        return {title: {"PE image": "no (no MZ header)"}}
    lfanew = struct.unpack("<I", image.read_at(0x3C, 4))[0]
    if lfanew > MAX_HEADER_OFFSET or lfanew + 24 > image.size \
            or image.read_at(lfanew, 4) != b"PE\0\0":
        return {title: {"PE image": "no (no PE signature)"}}
    machine, count, stamp, symbols_at, symbols, optional_size, characteristics = \
        _COFF.unpack(image.read_at(lfanew + 4, 20))
    header: dict[str, Scalar] = {
        "machine": f"0x{machine:04x}", "sections": count, "timestamp": stamp,
        "symbol table": symbols_at, "symbols": symbols, "optional header size": optional_size,
        "characteristics": f"0x{characteristics:04x}"}
    found = {title: header}
    opt_at = lfanew + 24
    if optional_size >= 72 and opt_at + 72 <= image.size:
        opt = image.read_at(opt_at, 72)
        magic = struct.unpack_from("<H", opt, 0)[0]
        header.update({
            "optional magic": f"0x{magic:04x}",
            "size of code": struct.unpack_from("<I", opt, 4)[0],
            "size of initialized data": struct.unpack_from("<I", opt, 8)[0],
            "entry point": f"0x{struct.unpack_from('<I', opt, 16)[0]:x}",
            "section alignment": struct.unpack_from("<I", opt, 32)[0],
            "file alignment": struct.unpack_from("<I", opt, 36)[0],
            "size of image": struct.unpack_from("<I", opt, 56)[0],
            "size of headers": struct.unpack_from("<I", opt, 60)[0],
            "checksum": f"0x{struct.unpack_from('<I', opt, 64)[0]:08x}",
            "subsystem": struct.unpack_from("<H", opt, 68)[0],
            "dll characteristics": f"0x{struct.unpack_from('<H', opt, 70)[0]:04x}"})
    if count > MAX_SECTIONS:
        header["section table"] = f"not read ({count} sections, more than {MAX_SECTIONS})"
        return found
    table_at = opt_at + optional_size
    if table_at + count * _SECTION.size > image.size:
        header["section table"] = "not read (past the end of the file)"
        return found
    table = image.read_at(table_at, count * _SECTION.size)
    names: set[str] = set()
    for n in range(count):
        (raw_name, vsize, vaddr, raw_size, raw_at, _relocs, _lines, _nrel, _nlin,
         flags) = _SECTION.unpack_from(table, n * _SECTION.size)
        name = raw_name.rstrip(b"\0").decode("latin-1") or f"#{n + 1}"
        if name in names:
            name = f"{name} #{n + 1}"
        names.add(name)
        fields: dict[str, Scalar] = {
            "index": n + 1, "virtual size": vsize, "virtual address": f"0x{vaddr:x}",
            "raw size": raw_size, "raw offset": raw_at, "characteristics": f"0x{flags:08x}"}
        if name in TEXT_SECTIONS and raw_at + min(vsize, raw_size) <= image.size \
                and min(vsize, raw_size) <= MAX_TEXT:
            text = image.read_at(raw_at, min(vsize, raw_size)).rstrip(b"\0")
            fields["text"] = text.decode("utf-8", "replace")
        if raw_at + raw_size <= image.size:
            hasher = hashlib.sha256()
            for chunk in image.sub(raw_at, raw_size, f"{image.what} section {name}").chunks():
                budget.charge_bytes(len(chunk), image.what)
                hasher.update(chunk)
            fields["content sha256"] = hasher.hexdigest()
        else:
            fields["content sha256"] = "(past the end of the file)"
        found[f"{title.removesuffix(' PE header')} PE section {name}"] = fields
    return found
