"""What a diff found: changes at three levels, in the order a reader wants them.

Packages first (added, removed, upgraded), then files (content, mode, owner, link
target, mtime, device numbers, xattrs), then the format's own fields (tar and gzip
headers, OCI JSON fields, ISO volume descriptors, El Torito, partition tables, cpio,
FAT and PE headers). Human output is capped per level with a count of what was left
out; ``--json`` output lists every change that was kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

LEVELS = ("package", "file", "format")
LEVEL_TITLES = {"package": "packages", "file": "files", "format": "format fields"}
PER_LEVEL = 20
"""Human output: changes shown per level before '… and N more'."""
MAX_KEPT = 20_000
"""Changes kept in a report; more are only counted (a report of two unrelated images
must not grow without bound)."""

Scalar = str | int | None


@dataclass(frozen=True, slots=True)
class Change:
    """One difference: at ``level``, in ``where`` (a package scope, a file path, a header),
    ``what`` (a field name, or ``added``/``removed``/``upgraded``) went from ``a`` to ``b``.
    ``None`` on one side means the thing exists only on the other."""

    level: str
    where: str
    what: str
    a: Scalar
    b: Scalar

    def describe(self, labels: tuple[str, str] = ("A", "B")) -> str:
        """One line, naming which side holds which value (digests cut to 16 hex digits)."""
        la, lb = labels
        a, b = _show(self.a), _show(self.b)
        if self.level == "package":
            if self.what == "added":
                return f"{self.where}: package added in {lb} ({b})"
            if self.what == "removed":
                return f"{self.where}: package only in {la} ({a})"
            return f"{self.where}: {self.what} {a} ({la}) → {b} ({lb})"
        if a is None:
            return f"{self.where}: {self.what} only in {lb}" + (
                f" ({b})" if b not in (None, "") else "")
        if b is None:
            return f"{self.where}: {self.what} only in {la}" + (
                f" ({a})" if a not in (None, "") else "")
        return f"{self.where}: {self.what} {a} ({la}) != {b} ({lb})"

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "where": self.where, "what": self.what, "a": self.a,
                "b": self.b}


_HEX = frozenset("0123456789abcdef")


def _show(value: Scalar) -> Scalar:
    if isinstance(value, str) and len(value) == 64 and _HEX.issuperset(value):
        return value[:16] + "…"
    if isinstance(value, str) and value.startswith("sha256:") and len(value) == 71:
        return value[:23] + "…"
    if isinstance(value, str) and len(value) > 120:
        return value[:120] + f"… ({len(value)} characters)"
    return value


@dataclass
class ChangeList:
    """Changes as they are found, with the count of those past :data:`MAX_KEPT`."""

    changes: list[Change] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)

    def add(self, level: str, where: str, what: str, a: Scalar, b: Scalar) -> None:
        if len(self.changes) >= MAX_KEPT:
            self.dropped[level] = self.dropped.get(level, 0) + 1
            return
        self.changes.append(Change(level, where, what, a, b))

    def extend(self, changes: Iterable[Change]) -> None:
        for change in changes:
            self.add(change.level, change.where, change.what, change.a, change.b)


@dataclass(frozen=True)
class DiffReport:
    """The result of comparing ``a`` with ``b`` (paths or names as the caller gave them)."""

    a: str
    b: str
    kind: str
    changes: tuple[Change, ...]
    dropped: tuple[tuple[str, int], ...] = ()
    labels: tuple[str, str] = ("A", "B")

    @property
    def identical(self) -> bool:
        return not self.changes and not self.dropped

    def at(self, level: str) -> list[Change]:
        return [c for c in self.changes if c.level == level]

    def count(self, level: str) -> int:
        return len(self.at(level)) + dict(self.dropped).get(level, 0)

    def lines(self, *, per_level: int = PER_LEVEL) -> list[str]:
        """The changes, packages first, at most ``per_level`` of each level plus a count."""
        out: list[str] = []
        for level in LEVELS:
            found = self.at(level)
            out.extend(c.describe(self.labels) for c in found[:per_level])
            left = self.count(level) - min(len(found), per_level)
            if left > 0:
                out.append(f"… and {left} more {LEVEL_TITLES[level][:-1]} "
                           f"change{'s' if left > 1 else ''}")
        return out

    def format_report(self, *, per_level: int = PER_LEVEL) -> str:
        """Human-readable text: a heading, then one section per level that has changes."""
        la, lb = self.labels
        head = [f"{la}: {self.a}", f"{lb}: {self.b}"]
        if self.identical:
            return "\n".join([*head, f"identical ({self.kind})"]) + "\n"
        summary = ", ".join(f"{self.count(level)} {LEVEL_TITLES[level]}"
                            for level in LEVELS if self.count(level))
        out = [*head, f"{self.kind}: differs in {summary}"]
        for level in LEVELS:
            found = self.at(level)
            total = self.count(level)
            if not total:
                continue
            out.append("")
            out.append(f"{LEVEL_TITLES[level].capitalize()} ({total}):")
            out.extend("  " + c.describe(self.labels) for c in found[:per_level])
            if total > min(len(found), per_level):
                out.append(f"  … and {total - min(len(found), per_level)} more")
        return "\n".join(out) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {"identical": self.identical, "kind": self.kind,
                "a": self.a, "b": self.b, "labels": list(self.labels),
                "counts": {level: self.count(level) for level in LEVELS},
                "changes": [c.to_json() for c in self.changes]}
