"""Explain how a rebuild differs from a published output: tar members and fields, OCI
JSON fields and layer members, or the first differing byte.

Every function returns a list of one-line differences (empty when identical), at most
``MAX_LISTED`` of them plus a line saying how many more there were.
"""

from __future__ import annotations

import gzip
import json
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from composer.hashing import hash_stream

MAX_LISTED = 12

_FIELDS = ("type", "mode", "uid", "gid", "uname", "gname", "mtime", "linkname", "size",
           "devmajor", "devminor")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.zst")
_JSON_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
               "application/vnd.oci.image.config.v1+json")


def _bounded(found: list[str]) -> list[str]:
    if len(found) <= MAX_LISTED:
        return found
    return [*found[:MAX_LISTED], f"… and {len(found) - MAX_LISTED} more"]


def _open_decompressed(path: Path) -> BinaryIO:
    fh = open(path, "rb")
    if path.name.endswith(".zst"):
        import zstandard

        reader: BinaryIO = zstandard.ZstdDecompressor().stream_reader(fh, closefd=True)
        return reader
    return fh


def _show(field: str, value: Any) -> str:
    return oct(value) if field == "mode" and isinstance(value, int) else repr(value)


def _members(path: Path) -> Iterator[tuple[tarfile.TarInfo, str]]:
    with _open_decompressed(path) as raw, tarfile.open(fileobj=raw, mode="r|*") as archive:
        for member in archive:
            digest = ""
            if member.isfile():
                fh = archive.extractfile(member)
                assert fh is not None
                digest, _ = hash_stream(fh)
            yield member, digest


def describe_differences(expected: Path, actual: Path) -> list[str]:
    """How ``actual`` differs from ``expected``: tar members when both are tars, else bytes."""
    if _same_bytes(expected, actual):
        return []
    if expected.name.endswith(_TAR_SUFFIXES):
        try:
            found = tar_differences(expected, actual)
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            found = [f"cannot read as tar ({exc})"]
        if found:
            return found
    return [_first_byte_difference(expected, actual)]


def tar_differences(expected: Path, actual: Path) -> list[str]:
    """Every member that is missing, extra, or differs in a header field or in content."""
    old = {m.name: (m, d) for m, d in _members(expected)}
    new = {m.name: (m, d) for m, d in _members(actual)}
    found: list[str] = []
    for name in list(old) + [n for n in new if n not in old]:
        if name not in new:
            found.append(f"member {name!r} is missing from the rebuild")
            continue
        if name not in old:
            found.append(f"member {name!r} is extra in the rebuild")
            continue
        (ma, da), (mb, db) = old[name], new[name]
        fields = [f"{f} {_show(f, getattr(ma, f))} != {_show(f, getattr(mb, f))}"
                  for f in _FIELDS if getattr(ma, f) != getattr(mb, f)]
        if ma.pax_headers != mb.pax_headers:
            fields.append(f"pax_headers {ma.pax_headers!r} != {mb.pax_headers!r}")
        if da != db:
            fields.append(f"content sha256 {da[:16]}… != {db[:16]}…")
        if fields:
            found.append(f"member {name!r}: " + ", ".join(fields))
    if not found and list(old) != list(new):
        found.append("the same members in another order")
    return _bounded(found)


def layout_differences(expected: Path, actual: Path) -> list[str]:
    """Differences between two OCI image layouts, from index.json down to layer members."""
    found: list[str] = []
    try:
        old_index = json.loads((expected / "index.json").read_bytes())
        new_index = json.loads((actual / "index.json").read_bytes())
    except (OSError, ValueError) as exc:
        return [f"cannot read index.json ({exc})"]
    _json_differences(expected, actual, old_index, new_index, "index.json", found)
    return _bounded(found)


def oci_archive_differences(expected: Path, actual: Path) -> list[str]:
    """An oci-archive is a layout in a tar: compare the layouts inside."""
    with tempfile.TemporaryDirectory(prefix="composer-diff-") as scratch:
        left, right = Path(scratch, "a"), Path(scratch, "b")
        for archive, folder in ((expected, left), (actual, right)):
            with tarfile.open(archive) as tf:
                tf.extractall(folder, filter="data")
        return layout_differences(left, right)


def _is_descriptor(value: Any) -> bool:
    return isinstance(value, dict) and {"mediaType", "digest", "size"} <= value.keys()


def _json_differences(left: Path, right: Path, a: Any, b: Any, where: str,
                      found: list[str]) -> None:
    if a == b or len(found) > MAX_LISTED:
        return
    if _is_descriptor(a) and _is_descriptor(b) and a["mediaType"] == b["mediaType"]:
        _descriptor_differences(left, right, a, b, where, found)
        extra = sorted(k for k in a.keys() | b.keys()
                       if k not in ("digest", "size") and a.get(k) != b.get(k))
        for key in extra:
            found.append(f"{where}.{key}: {a.get(key)!r} != {b.get(key)!r}")
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys()):
            if key not in b:
                found.append(f"{where}.{key} is missing from the rebuild")
            elif key not in a:
                found.append(f"{where}.{key} is extra in the rebuild")
            else:
                _json_differences(left, right, a[key], b[key], f"{where}.{key}", found)
        return
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _json_differences(left, right, x, y, f"{where}[{i}]", found)
        return
    found.append(f"{where}: {a!r} != {b!r}")


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[-1]


def _descriptor_differences(left: Path, right: Path, a: dict[str, Any], b: dict[str, Any],
                            where: str, found: list[str]) -> None:
    if a["digest"] == b["digest"]:
        return
    media_type = str(a["mediaType"])
    old, new = _blob(left, str(a["digest"])), _blob(right, str(b["digest"]))
    if not old.is_file() or not new.is_file():
        found.append(f"{where}: {a['digest']} != {b['digest']} (blob missing, cannot compare)")
        return
    role = next((r for r in ("index", "manifest", "config", "layer") if f".{r}." in media_type),
                media_type)
    label = f"{where} ({role})"
    if media_type in _JSON_TYPES or media_type.endswith("+json"):
        try:
            doc_a, doc_b = json.loads(old.read_bytes()), json.loads(new.read_bytes())
        except ValueError:
            found.append(f"{label}: {a['digest']} != {b['digest']}")
            return
        _json_differences(left, right, doc_a, doc_b, label, found)
        return
    if ".layer." in media_type:
        with tempfile.TemporaryDirectory(prefix="composer-diff-") as scratch:
            plain_a, plain_b = Path(scratch, "a.tar"), Path(scratch, "b.tar")
            _decompress(old, media_type, plain_a)
            _decompress(new, media_type, plain_b)
            found.extend(f"{label}: {line}" for line in describe_differences(plain_a, plain_b))
        return
    found.append(f"{label}: {a['digest']} != {b['digest']}")


def _decompress(blob: Path, media_type: str, dest: Path) -> None:
    with open(dest, "wb") as out:
        if media_type.endswith("+gzip") or media_type.endswith(".gzip"):
            with gzip.open(blob, "rb") as src:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
        elif media_type.endswith("+zstd"):
            import zstandard

            with open(blob, "rb") as raw:
                zstandard.ZstdDecompressor().copy_stream(raw, out)
        else:
            out.write(blob.read_bytes())


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                return False
            if not ca:
                return True


def _first_byte_difference(expected: Path, actual: Path) -> str:
    with open(expected, "rb") as fa, open(actual, "rb") as fb:
        offset = 0
        while True:
            ca = fa.read(1 << 16)
            cb = fb.read(1 << 16)
            if ca != cb:
                for i, (x, y) in enumerate(zip(ca, cb, strict=False)):
                    if x != y:
                        return f"byte {offset + i}: 0x{x:02x} != 0x{y:02x}"
                return f"sizes differ at byte {offset + min(len(ca), len(cb))}"
            if not ca:
                return ""
            offset += len(ca)
