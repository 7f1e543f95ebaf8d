"""What the readers produce and how two of them are compared.

Every reader turns its format into :class:`FileEntry` values (one per file, directory,
link or device, whatever archive or file system it came from) and format-level fields
(``where`` → ``field`` → value). A :class:`Snapshot` gathers them for one side, under
the names of the containers they came from (``/boot/efi.img!/EFI/BOOT/BOOTX64.EFI``),
and :func:`compare` turns two snapshots into changes, packages first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from composer.apk.version import compare_versions
from composer.diff.report import ChangeList, Scalar
from composer.diff.source import Budget

HEADER = " header"
"""Suffix of the format-level group holding one file's own header fields."""
NEST = "!"
"""Joins a container's name and a path inside it, as in ``jar:file!/path``."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file-system object as any archive or file system stores it.

    ``kind`` is ``file``, ``dir``, ``symlink``, ``hardlink``, ``char``, ``block`` or
    ``fifo``; ``sha256`` is the content's digest (regular files); ``header`` holds the
    format's own fields for this entry (tar uname, cpio inode, ISO extent …)."""

    path: str
    kind: str
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    mtime: int | str | None = None
    size: int = 0
    sha256: str = ""
    link: str = ""
    device: str = ""
    xattrs: tuple[tuple[str, str], ...] = ()
    header: tuple[tuple[str, Scalar], ...] = ()

    def fields(self) -> dict[str, Scalar]:
        """The compared file-level fields (mode in octal, owner as uid:gid)."""
        out: dict[str, Scalar] = {"type": self.kind}
        if self.mode is not None:
            out["mode"] = oct(self.mode)
        if self.uid is not None or self.gid is not None:
            out["owner"] = f"{self.uid}:{self.gid}"
        if self.kind == "file":
            out["size"] = self.size
            out["content sha256"] = self.sha256
        if self.link:
            out["link target"] = self.link
        if self.mtime is not None:
            out["mtime"] = self.mtime
        if self.device:
            out["device"] = self.device
        for key, value in self.xattrs:
            out[f"xattr {key}"] = value
        return out

    def summary(self) -> str:
        if self.kind == "file":
            return f"file, {self.size} bytes"
        if self.link:
            return f"{self.kind} to {self.link}"
        return self.kind


def normal_path(name: str) -> str:
    """``./etc/motd``, ``etc/motd`` and ``/etc/motd`` all as ``/etc/motd``."""
    while name.startswith("./"):
        name = name[2:]
    name = name.strip("/")
    return "/" + name if name not in ("", ".") else "/"


def join(prefix: str, path: str) -> str:
    return f"{prefix}{NEST}{path}" if prefix else path


@dataclass
class Snapshot:
    """Everything read from one side."""

    budget: Budget
    kind: str = ""
    packages: dict[str, dict[str, str]] = field(default_factory=dict)
    files: dict[str, dict[str, Scalar]] = field(default_factory=dict)
    fields: dict[str, dict[str, Scalar]] = field(default_factory=dict)

    def add_files(self, prefix: str, entries: list[FileEntry]) -> None:
        for entry in entries:
            where = join(prefix, entry.path)
            self.files[where] = entry.fields()
            if entry.header:
                self.fields.setdefault(where + HEADER, {}).update(entry.header)

    def field(self, where: str, what: str, value: Scalar) -> None:
        self.fields.setdefault(where, {})[what] = value

    def group(self, where: str, values: dict[str, Scalar]) -> None:
        self.fields.setdefault(where, {}).update(values)


def _packages(found: ChangeList, scope: str, a: dict[str, str], b: dict[str, str]) -> None:
    for name in sorted(a.keys() | b.keys()):
        where = f"{scope}: {name}" if scope else name
        old, new = a.get(name), b.get(name)
        if old is None:
            found.add("package", where, "added", None, new)
        elif new is None:
            found.add("package", where, "removed", old, None)
        elif old != new:
            order = compare_versions(old, new)
            verb = "upgraded" if order < 0 else "downgraded" if order > 0 else "rebuilt"
            found.add("package", where, verb, old, new)


def _table(found: ChangeList, level: str, a: dict[str, dict[str, Scalar]],
           b: dict[str, dict[str, Scalar]], noun: str,
           said: Callable[[str], bool] = lambda where: False) -> None:
    for where in [*a, *(k for k in b if k not in a)]:
        left, right = a.get(where), b.get(where)
        if (left is None or right is None) and said(where):
            continue
        if left is None or right is None:
            kept = right if left is None else left
            assert kept is not None
            summary = _summary(kept)
            found.add(level, where, noun, None if left is None else summary,
                      None if right is None else summary)
            continue
        if left == right:
            continue
        for what in [*left, *(k for k in right if k not in left)]:
            if left.get(what) != right.get(what):
                found.add(level, where, what, left.get(what), right.get(what))


def _summary(fields: dict[str, Scalar]) -> str:
    kind = fields.get("type")
    if kind == "file":
        return f"file, {fields.get('size')} bytes"
    if kind is not None:
        target = fields.get("link target")
        return f"{kind} to {target}" if target else str(kind)
    return ""


def compare(a: Snapshot, b: Snapshot) -> ChangeList:
    """Packages, then files, then format fields."""
    found = ChangeList()
    if a.kind != b.kind:
        found.add("format", "input", "kind", a.kind, b.kind)
    for scope in [*a.packages, *(s for s in b.packages if s not in a.packages)]:
        _packages(found, scope, a.packages.get(scope, {}), b.packages.get(scope, {}))
    _table(found, "file", a.files, b.files, "file")

    def added_or_removed(where: str) -> bool:
        """The header of a file only one side has: the file level says so already."""
        path = where.removesuffix(HEADER)
        return where.endswith(HEADER) and (path in a.files) != (path in b.files)
    _table(found, "format", a.fields, b.fields, "present", added_or_removed)
    return found
