"""Dependency atoms: ``[!]name[@tag][op version]``.

The same syntax appears in index ``D:``/``p:``/``i:`` lines, ``/etc/apk/world``
and profiles.  Index data is parsed leniently about versions (real Alpine
indexes carry a few versions outside the grammar, e.g. ``6.8.0p2-r4``, which
apk still compares); profile and world input is parsed strictly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from composer.apk.version import VALID_OPERATORS, is_valid_version, version_matches
from composer.errors import ArchiveError, ComposerError
from composer.numbers import shorten

__all__ = ["Dependency", "parse_dependency", "parse_dependencies", "format_dependencies"]

# Package names use [A-Za-z0-9._+-]; dependency and provided names may also
# contain ':', '/', ',', '[' and ']' (so:..., cmd:..., /bin/sh, py3.11:...).
_NAME = re.compile(r"[A-Za-z0-9._+\-:/,\[\]]+")
_INDEX_NAME = re.compile(r"[A-Za-z0-9._+\-:/,\[\]][A-Za-z0-9._+\-:/,\[\]!]*")
"""Index names may hold a ``!`` after the first character, as apk reads them: the real
community index provides ``cmd:kdevelop!`` (a command of that name)."""
_TAG = re.compile(r"[A-Za-z0-9._\-]+")
_INDEX_ATOM = re.compile(r"(!?)([A-Za-z0-9._+\-:/,\[\]][A-Za-z0-9._+\-:/,\[\]!]*)"
                         r"(?:([<>=~]+)([^\s<>=~]\S*))?")
"""A well-formed untagged index atom, read in one match (an index holds hundreds of
thousands); anything else takes the long way, which names the fault."""
_OPERATOR_CHARS = "<>=~"


@dataclass(frozen=True, slots=True)
class Dependency:
    """One dependency atom.

    ``op`` is the operator exactly as written ("" when there is no version);
    ``conflict`` is the ``!`` prefix; ``tag`` is the ``@tag`` repository pin.
    """

    name: str
    op: str = ""
    version: str | None = None
    conflict: bool = False
    tag: str | None = None

    def format(self) -> str:
        """The atom as apk writes it; ``parse_dependency`` reads it back unchanged."""
        text = ("!" if self.conflict else "") + self.name
        if self.tag:
            text += "@" + self.tag
        if self.op:
            text += self.op + (self.version or "")
        return text

    def __str__(self) -> str:
        return self.format()

    @property
    def is_versioned(self) -> bool:
        return self.op != ""

    def matches(self, version: str | None, *, checksum: str | None = None) -> bool:
        """True if a provider with ``version`` meets the version part, ignoring ``!``.

        ``version`` None is a provider without a version (an unversioned
        ``p:`` entry); it meets only an atom without a version, as in apk 2.x.
        """
        if self.op == "":
            return True
        if self.op == "><":
            return checksum is not None and checksum == self.version
        if version is None or self.version is None:
            return False
        return version_matches(version, self.op, self.version)

    def satisfied_by(self, version: str | None, *, checksum: str | None = None) -> bool:
        """True if a selected provider with ``version`` is acceptable to this atom.

        For a conflict (``!name``) this is True when the provider does *not*
        match; a conflict is always satisfied when nothing provides the name.
        """
        return self.matches(version, checksum=checksum) != self.conflict


def parse_dependency(
    text: str,
    *,
    source: str,
    error_cls: type[ComposerError] = ArchiveError,
    strict: bool = False,
    allow_tag: bool = True,
) -> Dependency:
    """Parse one atom; errors are ``error_cls`` naming ``source``.

    ``strict`` also requires the version to follow the Alpine grammar (use it
    for profiles and world files); ``allow_tag`` False rejects ``@tag``.
    """

    if not strict and (match := _INDEX_ATOM.fullmatch(text)) is not None:
        conflict_mark, name, operator, wanted = match.groups()
        if operator is None or operator in VALID_OPERATORS:
            return Dependency(name=name, op=operator or "", version=wanted,
                              conflict=bool(conflict_mark))
    return _parse_atom(text, source=source, error_cls=error_cls, strict=strict,
                       allow_tag=allow_tag)


def _parse_atom(text: str, *, source: str, error_cls: type[ComposerError], strict: bool,
                allow_tag: bool) -> Dependency:
    """:func:`parse_dependency` character by character, naming what is wrong."""

    def fail(why: str) -> ComposerError:
        return error_cls(f"{source}: invalid dependency {shorten(text)}: {why}")

    body = text
    conflict = body.startswith("!")
    if conflict:
        body = body[1:]
    cut = len(body)
    for i, c in enumerate(body):
        if c in _OPERATOR_CHARS:
            cut = i
            break
    name_part, rest = body[:cut], body[cut:]
    op_end = 0
    while op_end < len(rest) and rest[op_end] in _OPERATOR_CHARS:
        op_end += 1
    op, version = rest[:op_end], rest[op_end:]
    tag: str | None = None
    if "@" in name_part:
        name_part, tag = name_part.split("@", 1)
        if not allow_tag:
            raise fail("a repository tag (@tag) is not allowed here")
        if not _TAG.fullmatch(tag):
            raise fail("empty or malformed repository tag")
    if not name_part:
        raise fail("missing package name")
    if not (_NAME if strict else _INDEX_NAME).fullmatch(name_part):
        raise fail("package name contains characters apk does not allow")
    if op:
        if op not in VALID_OPERATORS:
            raise fail(f"unknown operator {shorten(op)}")
        if not version:
            raise fail(f"operator {op!r} without a version")
        if any(c.isspace() for c in version):
            raise fail("whitespace inside the version")
        if strict and op != "><" and not is_valid_version(version):
            raise fail(f"{shorten(version)} is not a valid Alpine version")
    return Dependency(name=name_part, op=op, version=version if op else None,
                      conflict=conflict, tag=tag)


def parse_dependencies(
    text: str,
    *,
    source: str,
    error_cls: type[ComposerError] = ArchiveError,
    strict: bool = False,
    allow_tag: bool = True,
) -> tuple[Dependency, ...]:
    """Parse a space- or newline-separated list of atoms (a D:/p:/i: value or a world file)."""
    return tuple(
        parse_dependency(word, source=source, error_cls=error_cls, strict=strict,
                         allow_tag=allow_tag)
        for word in text.split()
    )


def format_dependencies(deps: tuple[Dependency, ...] | list[Dependency]) -> str:
    """Space-separated atoms, as in an index line."""
    return " ".join(d.format() for d in deps)
