"""ISO 9660 volume descriptors and directory records (ECMA-119), with Rock Ridge.

Read by hand rather than with pycdlib: a diff needs only the descriptors and the
directory records (with Rock Ridge names, modes, owners, links and times), and a
reader this small can bound every count, depth and size. Records may point anywhere
inside the image, also into another file's bytes (composer stores the kernel and
initramfs once, inside the UKI): an extent is only checked to lie inside the image.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from composer.diff.report import Scalar
from composer.diff.source import Budget, Bytes
from composer.errors import ArchiveError

BLOCK = 2048
FIRST_DESCRIPTOR = 16
MAX_DESCRIPTORS = 64
MAX_DIRECTORY = 4 << 20
MAX_DEPTH = 32
DIRECTORY_FLAG = 0x02
MULTI_EXTENT_FLAG = 0x80
_TYPES = {0: "boot record", 1: "primary volume descriptor", 2: "supplementary volume descriptor",
          3: "volume partition descriptor", 255: "volume descriptor set terminator"}
JOLIET_ESCAPES = (b"%/@", b"%/C", b"%/E")


@dataclass(frozen=True)
class Descriptor:
    number: int
    kind: int
    block: bytes

    @property
    def joliet(self) -> bool:
        return self.kind == 2 and self.block[88:91] in JOLIET_ESCAPES

    @property
    def title(self) -> str:
        if self.kind == 1:
            return "ISO primary volume descriptor"
        if self.joliet:
            return "ISO Joliet volume descriptor"
        return f"ISO {_TYPES.get(self.kind, f'volume descriptor type {self.kind}')} " \
               f"(block {self.number})"


@dataclass(frozen=True)
class Record:
    """One directory record, with what Rock Ridge says about it."""

    path: str
    extent: int
    size: int
    flags: int
    date: str
    mode: int | None = None
    nlink: int | None = None
    uid: int | None = None
    gid: int | None = None
    link: str = ""
    rr_mtime: str = ""

    @property
    def is_dir(self) -> bool:
        return bool(self.flags & DIRECTORY_FLAG)


def descriptors(image: Bytes) -> list[Descriptor]:
    found = []
    for number in range(FIRST_DESCRIPTOR, FIRST_DESCRIPTOR + MAX_DESCRIPTORS):
        block = image.read_at(number * BLOCK, BLOCK)
        if block[1:6] != b"CD001":
            raise ArchiveError(f"{image.what}: no ISO 9660 volume descriptor at block {number}")
        found.append(Descriptor(number, block[0], block))
        if block[0] == 255:
            return found
    raise ArchiveError(f"{image.what}: no volume descriptor set terminator in the first "
                       f"{MAX_DESCRIPTORS} descriptors")


def _text(raw: bytes, joliet: bool) -> str:
    if joliet:
        return raw.decode("utf-16-be", "replace").rstrip(" \0")
    return raw.decode("latin-1").rstrip(" ")


def _long_date(raw: bytes) -> str:
    digits = raw[:16].decode("latin-1")
    offset = struct.unpack("b", raw[16:17])[0] * 15
    return f"{digits} {offset:+d}min"


def record_date(raw: bytes) -> str:
    year, month, day, hour, minute, second = raw[:6]
    offset = struct.unpack("b", raw[6:7])[0] * 15
    return (f"{1900 + year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d} "
            f"{offset:+d}min")


def descriptor_fields(d: Descriptor) -> dict[str, Scalar]:
    """The fields ECMA-119 8.4/8.5 defines (and the El Torito boot record's)."""
    b = d.block
    if d.kind == 0:
        return {"type": 0, "boot system": _text(b[7:39], False).rstrip("\0"),
                "boot identifier": _text(b[39:71], False).rstrip("\0"),
                "boot catalog LBA": struct.unpack_from("<I", b, 71)[0]}
    if d.kind not in (1, 2):
        return {"type": d.kind, "version": b[6]}
    j = d.joliet
    root_extent, root_size = struct.unpack_from("<I4xI", b, 158)
    return {
        "type": d.kind, "version": b[6], "flags": b[7], "system id": _text(b[8:40], j),
        "volume id": _text(b[40:72], j), "volume space size": struct.unpack_from("<I", b, 80)[0],
        "escape sequences": b[88:120].rstrip(b"\0").hex(),
        "volume set size": struct.unpack_from("<H", b, 120)[0],
        "volume sequence number": struct.unpack_from("<H", b, 124)[0],
        "logical block size": struct.unpack_from("<H", b, 128)[0],
        "path table size": struct.unpack_from("<I", b, 132)[0],
        "L path table": struct.unpack_from("<I", b, 140)[0],
        "optional L path table": struct.unpack_from("<I", b, 144)[0],
        "M path table": struct.unpack_from(">I", b, 148)[0],
        "optional M path table": struct.unpack_from(">I", b, 152)[0],
        "root directory extent": root_extent, "root directory size": root_size,
        "root directory date": record_date(b[174:181]),
        "volume set id": _text(b[190:318], j), "publisher id": _text(b[318:446], j),
        "data preparer id": _text(b[446:574], j), "application id": _text(b[574:702], j),
        "copyright file": _text(b[702:739], j), "abstract file": _text(b[739:776], j),
        "bibliographic file": _text(b[776:813], j),
        "creation date": _long_date(b[813:830]), "modification date": _long_date(b[830:847]),
        "expiration date": _long_date(b[847:864]), "effective date": _long_date(b[864:881]),
        "file structure version": b[881],
        "application use sha256": _short_digest(b[883:1395]),
    }


def _short_digest(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


def _rock_ridge(area: bytes) -> dict[str, object]:
    """NM, PX, SL and TF entries of a system use area (continuation areas are not followed)."""
    found: dict[str, object] = {}
    name: list[bytes] = []
    link: list[str] = []
    pos = 0
    while pos + 4 <= len(area):
        sig, length = area[pos:pos + 2], area[pos + 2]
        if length < 4 or pos + length > len(area):
            break
        body = area[pos + 4:pos + length]
        if sig == b"NM" and body:
            if not body[0] & 0x06:
                name.append(body[1:])
        elif sig == b"PX" and len(body) >= 32:
            found["mode"], found["nlink"], found["uid"], found["gid"] = (
                struct.unpack_from("<I", body, off)[0] for off in (0, 8, 16, 24))
        elif sig == b"SL" and body:
            link.append(_symlink(body[1:]))
        elif sig == b"TF" and body:
            flags, stamps = body[0], body[1:]
            width = 17 if flags & 0x80 else 7
            if flags & 0x02:
                at = width if flags & 0x01 else 0
                stamp = stamps[at:at + width]
                if len(stamp) == width:
                    found["mtime"] = _long_date(stamp) if width == 17 else record_date(stamp)
        pos += length
    if name:
        found["name"] = b"".join(name).decode("utf-8", "replace")
    if link:
        found["link"] = "".join(link)
    return found


def _symlink(components: bytes) -> str:
    parts: list[str] = []
    pos = 0
    while pos + 2 <= len(components):
        flags, length = components[pos], components[pos + 1]
        text = components[pos + 2:pos + 2 + length].decode("utf-8", "replace")
        parts.append("." if flags & 0x02 else ".." if flags & 0x04 else "" if flags & 0x08
                     else text)
        pos += 2 + length
    joined = "/".join(parts)
    return joined if joined else "/"


def _iso_name(identifier: bytes, joliet: bool) -> str:
    text = identifier.decode("utf-16-be" if joliet else "latin-1", "replace")
    return text.split(";", 1)[0].rstrip(".") if not joliet or ";" in text else text


def walk(image: Bytes, extent: int, size: int, *, joliet: bool, budget: Budget) -> list[Record]:
    """Every record below the root directory at ``extent``, parents before children."""
    found: list[Record] = []
    seen: set[int] = set()
    stack: list[tuple[str, int, int, int]] = [("", extent, size, 0)]
    while stack:
        parent, start, length, depth = stack.pop()
        if start in seen:
            raise ArchiveError(f"{image.what}: directory {parent or '/'} is reached twice "
                               f"(a loop at block {start})")
        seen.add(start)
        if depth > MAX_DEPTH:
            raise ArchiveError(f"{image.what}: directories nested more than {MAX_DEPTH} deep")
        if length > MAX_DIRECTORY:
            raise ArchiveError(f"{image.what}: directory {parent or '/'} of {length} bytes, more "
                               f"than the {MAX_DIRECTORY} allowed")
        budget.charge_bytes(length, image.what)
        data = image.read_at(start * BLOCK, length)
        children: list[tuple[str, int, int, int]] = []
        pos = 0
        while pos < len(data):
            rec_len = data[pos]
            if rec_len == 0:
                pos = (pos // BLOCK + 1) * BLOCK
                continue
            name_len = data[pos + 32] if pos + 33 <= len(data) else 0
            if rec_len < 34 or pos + rec_len > len(data) or 33 + name_len > rec_len:
                raise ArchiveError(f"{image.what}: damaged directory record at byte "
                                   f"{start * BLOCK + pos}")
            rec = data[pos:pos + rec_len]
            pos += rec_len
            identifier = rec[33:33 + name_len]
            if identifier in (b"\0", b"\1"):
                continue
            rr = {} if joliet else _rock_ridge(rec[33 + name_len + (1 - name_len % 2):])
            name = str(rr.get("name") or _iso_name(identifier, joliet))
            path = budget.name(f"{parent}/{name}", image.what)
            budget.charge_entry(image.what, len(path))
            flags = rec[25]
            if flags & MULTI_EXTENT_FLAG:
                raise ArchiveError(f"{image.what}: {path}: multi-extent files are not supported")
            rec_extent, rec_size = struct.unpack_from("<I4xI", rec, 2)
            number = {k: v for k, v in rr.items() if isinstance(v, int)}
            record = Record(path=path, extent=rec_extent, size=rec_size, flags=flags,
                            date=record_date(rec[18:25]), mode=number.get("mode"),
                            nlink=number.get("nlink"), uid=number.get("uid"),
                            gid=number.get("gid"),
                            link=str(rr.get("link", "")), rr_mtime=str(rr.get("mtime", "")))
            found.append(record)
            if record.is_dir:
                children.append((path, rec_extent, rec_size, depth + 1))
        stack.extend(reversed(children))
    return found
