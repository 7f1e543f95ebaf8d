"""Compare two artifacts of any kind composer writes, or two output folders.

:func:`diff_paths` finds what each side is (an output folder, an OCI layout, an ISO, an
oci-archive, a docker-archive, a tarball in any compression), reads both sides into
snapshots within one :class:`Budget` each, and compares them. Nothing is extracted or
written; files are opened read-only, without following them into FIFOs or devices.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from composer.diff.compression import HEAD, stream_fields
from composer.diff.disk import looks_like_disk, read_disk
from composer.diff.iso import looks_like_iso, read_iso
from composer.diff.model import Snapshot, compare
from composer.diff.oci import add_json, flatten, json_document, read_docker_archive, read_layout
from composer.diff.packages import INSTALLED, installed_versions, manifest_versions
from composer.diff.report import DiffReport, Scalar
from composer.diff.source import Budget, Bytes, DiffLimits, FileBytes, open_stream
from composer.diff.tarball import TarContents, read_tar
from composer.errors import ArchiveError, UsageError
from composer.jsonsafe import JsonValue, load_json
from composer.manifest import MANIFEST_NAME, MAX_ARTIFACTS, recorded_outputs
from composer.numbers import shorten

_CONTENT_NAMED = re.compile(r"(^|/)[0-9a-f]{64}(/|\.json$|$)")
"""Archive members named by their digest: compared through the layout, not by name."""
_SMALL_JSON = ("/index.json", "/oci-layout", "/manifest.json", "/repositories")


class Side:
    """One side being read: its budget, its snapshot, and the files it opened."""

    def __init__(self, label: str, limits: DiffLimits, stack: ExitStack) -> None:
        self.snap = Snapshot(Budget(limits, label))
        self.stack = stack

    def open(self, path: Path, what: str | None = None) -> FileBytes:
        """``path`` as a regular file opened read-only (never a FIFO, device or folder)."""
        name = what or str(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise UsageError(f"{name}: no such file") from None
        except OSError as exc:
            raise UsageError(f"{name}: cannot read ({exc.strerror or exc})") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise UsageError(f"{name}: not a regular file")
        fh = self.stack.enter_context(os.fdopen(fd, "rb"))
        return FileBytes(fh, 0, info.st_size, name)


def detect(path: Path) -> str:
    """``out-folder``, ``oci-layout`` or ``file`` (what a file holds is found on reading)."""
    if path.is_dir():
        if (path / MANIFEST_NAME).is_file():
            return "out-folder"
        if (path / "index.json").is_file():
            return "oci-layout"
        raise UsageError(f"{path}: a folder that is neither an output folder ({MANIFEST_NAME}) "
                         "nor an OCI layout (index.json)")
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    return "file"


def _digest(source: Bytes, budget: Budget) -> str:
    hasher = hashlib.sha256()
    for chunk in source.chunks():
        budget.charge_bytes(len(chunk), source.what)
        hasher.update(chunk)
    return hasher.hexdigest()


def _sniff(source: Bytes) -> str:
    head = source.read_at(0, min(source.size, 40 * 1024))
    if looks_like_iso(head):
        return "iso"
    if looks_like_disk(head):
        return "disk"
    if open_stream(source, Budget(DiffLimits(), ""))[0] != "none" or head[257:262] == b"ustar":
        return "tar"
    return "file"


def _keep(limits: DiffLimits) -> Callable[[str], int]:
    def keep(path: str) -> int:
        if path in _SMALL_JSON:
            return limits.max_json
        return limits.max_db if path == INSTALLED else 0
    return keep


def _tar_files(snap: Snapshot, prefix: str, contents: TarContents) -> None:
    snap.add_files(prefix, contents.entries)
    snap.field(f"{prefix}!tar" if prefix else "tar", "member order", _order(contents))
    if INSTALLED in contents.kept:
        snap.packages[prefix] = installed_versions(contents.kept[INSTALLED],
                                                   source=f"{prefix or 'tar'}: {INSTALLED}")


def _order(contents: TarContents) -> str:
    """How the members are ordered: composer sorts them by path bytes, as Alpine does."""
    names = [e.path.encode("utf-8", "surrogateescape") for e in contents.entries]
    for before, after in zip(names, names[1:], strict=False):
        if after < before:
            return (f"not sorted ({shorten(after.decode('utf-8', 'replace'))} after "
                    f"{shorten(before.decode('utf-8', 'replace'))})")
    return "sorted by path"


def read_file(side: Side, source: FileBytes, prefix: str) -> str:
    """An ISO, a disk image, a tarball, an oci-archive or a docker-archive; returns which."""
    snap, budget = side.snap, side.snap.budget
    head = source.read_at(0, min(source.size, 40 * 1024))
    if looks_like_iso(head):
        read_iso(snap, source, prefix=prefix)
        return "iso"
    if looks_like_disk(head):
        read_disk(snap, source, prefix=prefix)
        return "disk"
    kind, stream = open_stream(source, budget)
    keep = _keep(budget.limits)
    try:
        contents = read_tar(stream, source=source.what, budget=budget, keep=keep)
    except ArchiveError as exc:
        if kind == "none" and head[257:262] != b"ustar":
            raise ArchiveError(f"{source.what}: not an ISO, a disk image (GPT, raw or qcow2), a "
                               "tar archive (plain, gzip, zstd or xz), an OCI layout or archive, "
                               "or an output folder") from exc
        raise
    where = f"{prefix}!compression" if prefix else "compression"
    if kind != "none":
        snap.group(where, stream_fields(kind, head[:HEAD], source.size))
        _tar_files(snap, prefix, contents)
        return "tar"
    if "/oci-layout" in contents.kept and "/index.json" in contents.kept:
        _archive_members(snap, prefix, contents)

        def blob(digest: str) -> Bytes:
            return _member(source, contents, "/blobs/sha256/" + digest.split(":", 1)[-1])
        read_layout(snap, _member(source, contents, "/index.json"), blob,
                    prefix=f"{prefix}!" if prefix else "")
        return "oci-archive"
    if "/manifest.json" in contents.kept and "/repositories" in contents.kept:
        _archive_members(snap, prefix, contents)
        add_json(snap, f"{prefix}!repositories" if prefix else "repositories",
                 json_document(_member(source, contents, "/repositories"), budget))
        read_docker_archive(snap, lambda name: _member(source, contents, "/" + name.lstrip("/")),
                            prefix=f"{prefix}!" if prefix else "")
        return "docker-archive"
    _tar_files(snap, prefix, contents)
    return "tar"


def _member(source: FileBytes, contents: TarContents, path: str) -> Bytes:
    if path not in contents.data_at:
        raise ArchiveError(f"{source.what}: no member {shorten(path.lstrip('/'))}")
    start, size = contents.data_at[path]
    return source.sub(start, size, f"{source.what}: {path.lstrip('/')}")


def _archive_members(snap: Snapshot, prefix: str, contents: TarContents) -> None:
    """The outer tar's own headers (the blobs' contents are compared through the layout)."""
    for entry in contents.entries:
        if _CONTENT_NAMED.search(entry.path):
            continue
        fields = {k: v for k, v in entry.fields().items() if k != "content sha256"}
        fields.update(entry.header)
        snap.group(f"{prefix}!archive member {entry.path}" if prefix
                   else f"archive member {entry.path}", fields)


def read_oci_folder(side: Side, folder: Path, prefix: str) -> None:
    def blob(digest: str) -> Bytes:
        hexdigest = digest.split(":", 1)[-1]
        path = folder / "blobs" / "sha256" / hexdigest
        if not path.is_file():
            raise ArchiveError(f"{folder}: blob {digest} is missing")
        return side.open(path)
    layout = folder / "oci-layout"
    if layout.is_file():
        add_json(side.snap, f"{prefix}!oci-layout" if prefix else "oci-layout",
                 json_document(side.open(layout), side.snap.budget))
    read_layout(side.snap, side.open(folder / "index.json"), blob,
                prefix=f"{prefix}!" if prefix else "")


def _artifacts(folder: Path, side: Side) -> tuple[dict[str, str], JsonValue]:
    """role → path of each artifact listed in manifest.json (an OCI layout counts once)."""
    source = side.open(folder / MANIFEST_NAME)
    if source.size > 16 << 20:
        raise ArchiveError(f"{source.what}: {source.size} bytes, more than the 16 MiB allowed")
    manifest = load_json(source.read_at(0, source.size), what=source.what, max_bytes=16 << 20)
    roles: dict[str, str] = {}
    for output, path in recorded_outputs(manifest):
        fmt = output.field("format").str(max_len=64)
        arch_field = output.optional("arch")
        arch = arch_field.str(max_len=64) if arch_field is not None else ""
        if "/" in path:
            if fmt != "oci-index-json":
                continue
            path, role = path.split("/", 1)[0], f"oci layout {path.split('/', 1)[0]}"
        else:
            role = f"{fmt} {arch}".strip()
        while role in roles:
            role += "'"
        roles[role] = path
    return roles, manifest


def _manifest_fields(manifest: JsonValue) -> dict[str, Scalar]:
    """manifest.json by path, with inputs keyed by what they are rather than by position;
    outputs are left to the artifact-by-artifact comparison, packages to the package level."""
    raw = manifest.raw()
    if not isinstance(raw, dict):
        manifest.fail("expected an object")
    doc = {k: v for k, v in raw.items() if k not in ("outputs", "inputs", "packages")}
    inputs = manifest.optional("inputs")
    keyed: dict[str, object] = {}
    for item in inputs.items(max_items=MAX_ARTIFACTS) if inputs is not None else ():
        fields = {k: v.raw() for k, v in item.members(max_items=64)}
        key = " ".join(str(fields[k]) for k in ("kind", "arch", "name") if fields.get(k))
        while key in keyed:
            key += "'"
        keyed[key] = fields
    doc["inputs"] = keyed
    out: dict[str, Scalar] = {}
    flatten(doc, "$", out, what=manifest.what)
    return out


def read_out_folder(a: Path, b: Path, sa: Side, sb: Side) -> None:
    roles_a, manifest_a = _artifacts(a, sa)
    roles_b, manifest_b = _artifacts(b, sb)
    for side, manifest in ((sa, manifest_a), (sb, manifest_b)):
        side.snap.packages.update(manifest_versions(manifest))
        side.snap.group(MANIFEST_NAME, _manifest_fields(manifest))
        side.snap.kind = "out-folder"
    for role in [*roles_a, *(r for r in roles_b if r not in roles_a)]:
        pa, pb = roles_a.get(role), roles_b.get(role)
        if pa is None or pb is None:
            (sb if pa is None else sa).snap.field("artifacts", role, pb or pa)
            continue
        sa.snap.field("artifacts", role, pa)
        sb.snap.field("artifacts", role, pb)
        read_artifact(sa, a / pa, pa, sb, b / pb)


def read_artifact(sa: Side, pa: Path, prefix: str, sb: Side, pb: Path) -> None:
    """One paired artifact of two output folders, under ``prefix`` (A's name) on both sides."""
    if pa.is_dir() and pb.is_dir():
        read_oci_folder(sa, pa, prefix)
        read_oci_folder(sb, pb, prefix)
        return
    fa, fb = sa.open(pa), sb.open(pb)
    if fa.size == fb.size and _digest(fa, sa.snap.budget) == _digest(fb, sb.snap.budget):
        return
    for side, source in ((sa, fa), (sb, fb)):
        if prefix.endswith(".json"):
            add_json(side.snap, prefix, json_document(source, side.snap.budget))
        elif prefix.endswith(".crt"):
            side.snap.field(prefix, "certificate sha256", _digest(source, side.snap.budget))
        else:
            side.snap.field(prefix, "kind", read_file(side, source, prefix))


def diff_paths(a: Path, b: Path, *, labels: tuple[str, str] = ("A", "B"),
               limits: DiffLimits | None = None) -> DiffReport:
    """Compare ``a`` with ``b``: packages, files, then format fields (see the package doc)."""
    limits = limits or DiffLimits()
    kind_a, kind_b = detect(a), detect(b)
    with ExitStack() as stack:
        sa, sb = Side(labels[0], limits, stack), Side(labels[1], limits, stack)
        if kind_a == kind_b == "file":
            fa, fb = sa.open(a), sb.open(b)
            if fa.size == fb.size and \
                    _digest(fa, sa.snap.budget) == _digest(fb, sb.snap.budget):
                return DiffReport(a=str(a), b=str(b), kind=_sniff(fa), changes=(), labels=labels)
        if kind_a == kind_b == "out-folder":
            read_out_folder(a, b, sa, sb)
        else:
            for side, path, kind in ((sa, a, kind_a), (sb, b, kind_b)):
                side.snap.kind = kind
                if kind == "oci-layout":
                    read_oci_folder(side, path, "")
                elif kind == "file":
                    side.snap.kind = read_file(side, side.open(path), "")
        found = compare(sa.snap, sb.snap)
        if kind_a == kind_b == "file" and not found.changes:
            found.add("format", "bytes", "sha256", _digest(sa.open(a), sa.snap.budget),
                      _digest(sb.open(b), sb.snap.budget))
    kind = sa.snap.kind if sa.snap.kind == sb.snap.kind else f"{sa.snap.kind} vs {sb.snap.kind}"
    return DiffReport(a=str(a), b=str(b), kind=kind, changes=tuple(found.changes),
                      dropped=tuple(found.dropped.items()), labels=labels)
