"""The ``APKINDEX`` text format: parse records into PackageInfo and write them back.

Input is the already verified ``APKINDEX`` member (signature checks live in
``composer.apk.signing``).  Writing a parsed index reproduces it byte for byte:
optional fields remember whether they were present, and unknown fields are
kept in order after the known ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from composer.apk.depends import Dependency, format_dependencies, parse_dependency
from composer.errors import ArchiveError
from composer.numbers import clip, parse_decimal, shorten

__all__ = [
    "PackageInfo",
    "ApkIndex",
    "parse_apkindex",
    "format_apkindex",
    "format_package_record",
    "parse_records",
    "iter_records",
    "count_records",
    "MAX_INDEX_RECORDS",
    "package_from_fields",
    "FIELD_ORDER",
]

# Order in which apk-tools writes the package-info lines of a record.
FIELD_ORDER = "CPVASITULomtckDpirq"
_INT_FIELDS = frozenset("SItkq")
_DEP_FIELDS = frozenset("Dpir")


@dataclass(frozen=True, slots=True)
class PackageInfo:
    """One package record of an index (or of the installed database).

    Optional text fields are None when the line is absent.  ``repository`` and
    ``tag`` say where the record came from and are set by the caller; they are
    not part of the index text.
    """

    name: str
    version: str
    checksum: str | None = None          # C:  identity, e.g. "Q1..." (base64 SHA-1)
    arch: str | None = None              # A:
    size: int | None = None              # S:  .apk file size
    installed_size: int | None = None    # I:
    description: str | None = None       # T:
    url: str | None = None               # U:
    license: str | None = None           # L:
    origin: str | None = None            # o:
    maintainer: str | None = None        # m:
    build_time: int | None = None        # t:
    commit: str | None = None            # c:
    provider_priority: int | None = None  # k:
    depends: tuple[Dependency, ...] = ()   # D:
    provides: tuple[Dependency, ...] = ()  # p:
    install_if: tuple[Dependency, ...] = ()  # i:
    replaces: tuple[Dependency, ...] = ()  # r:
    replaces_priority: int | None = None  # q:
    extra: tuple[tuple[str, str], ...] = ()  # unknown lines, in order
    repository: str = ""
    tag: str | None = None

    @property
    def label(self) -> str:
        """``name-version``, the way apk names a package in messages and file names."""
        return f"{self.name}-{self.version}"

    @property
    def filename(self) -> str:
        """The ``.apk`` file name in a repository."""
        return f"{self.name}-{self.version}.apk"


@dataclass(frozen=True, slots=True)
class ApkIndex:
    """A parsed index: the DESCRIPTION text (if known) and its packages in file order."""

    description: str | None
    packages: tuple[PackageInfo, ...]


MAX_INDEX_RECORDS = 200_000
"""Records one index may hold: Alpine's largest (v3.19 community) has 17,587."""
MAX_INDEX_MEMORY = 192 << 20
"""Estimated size of one parsed index (the v3.19 community index: about 20 MiB)."""
_SHARED_FIELDS = frozenset("VALUomc")
"""Text fields that repeat across records (subpackages share version, origin, URL, commit…)."""
_RECORD_START = re.compile(rb"\n\n(?=[^\n])")

IndexText = bytes | Callable[[], Iterable[bytes]]
"""The ``APKINDEX`` text whole, or a function that yields it in pieces each time it is
called (``VerifiedIndex.chunks``), so that it can be read twice without being kept."""


def _pieces(text: IndexText) -> Iterable[bytes]:
    return (text,) if isinstance(text, bytes) else text()


def count_records(text: IndexText) -> int:
    """How many records ``text`` holds, counted on the bytes before anything is parsed."""
    count = 0
    tail = b"\n\n"
    for piece in _pieces(text):
        window = tail + piece
        count += sum(1 for _ in _RECORD_START.finditer(window))
        tail = window[-2:]
    return count


def _lines(text: IndexText) -> Iterator[tuple[bytes, int]]:
    """Each line (without its newline) and the offset where it starts; a line may span
    pieces, and is joined once, not copied per piece."""
    parts: list[bytes] = []
    start = offset = 0
    for piece in _pieces(text):
        pos = 0
        while (end := piece.find(b"\n", pos)) >= 0:
            if parts:
                parts.append(piece[pos:end])
                line = b"".join(parts)
                parts = []
            else:
                line = piece[pos:end]
                start = offset + pos
            yield line, start
            pos = end + 1
        if pos < len(piece):
            if not parts:
                start = offset + pos
            parts.append(piece[pos:])
        offset += len(piece)
    yield b"".join(parts), start


def iter_records(text: IndexText, *, source: str) -> Iterator[list[tuple[str, str, int]]]:
    """Each record of ``text`` as ``(letter, value, line number)`` fields, one at a time.

    A blank line ends a record; every other line must be ``X:value``. Only one record's
    text is decoded at a time.
    """
    current: list[tuple[str, str, int]] = []
    for number, (raw, start) in enumerate(_lines(text), start=1):
        if not raw:
            if current:
                yield current
                current = []
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ArchiveError(f"{source}: not UTF-8 text (byte {start + exc.start})") from None
        if len(line) < 2 or line[1] != ":":
            raise ArchiveError(f"{source}: line {number}: expected 'X:value', got "
                               f"{shorten(line)}")
        current.append((line[0], line[2:], number))
    if current:
        yield current


def parse_records(text: IndexText, *, source: str) -> list[list[tuple[str, str, int]]]:
    """Every record of ``text`` (see :func:`iter_records`)."""
    return list(iter_records(text, source=source))


_OBJECT = 56
"""What a small Python object (a str header, a tuple header) costs, rounded up."""
_ENTRY = 64
"""One entry of a lookup dict, with room for its growth."""
_RECORD = 240
_DEPENDENCY = 72


class _Shared:
    """One copy of each value that repeats across an index's records: the same text field
    (arch, license, maintainer …), the same dependency atom and the same whole ``D:``
    line are one object each, which keeps a parsed index several times smaller.

    It also keeps the account of what the parsed index costs in memory, estimated as the
    objects are made, and stops at ``budget``: text of tiny unique atoms would otherwise
    cost forty times its size."""

    __slots__ = ("texts", "atoms", "lists", "cost", "budget", "source")

    def __init__(self, source: str, budget: int) -> None:
        self.texts: dict[str, str] = {}
        self.atoms: dict[str, Dependency] = {}
        self.lists: dict[str, tuple[Dependency, ...]] = {}
        self.cost = 0
        self.budget = budget
        self.source = source

    def charge(self, size: int) -> None:
        self.cost += size
        if self.cost > self.budget:
            raise ArchiveError(f"{self.source}: the parsed index would take more than "
                               f"{self.budget} bytes of memory")

    def text(self, value: str) -> str:
        found = self.texts.get(value)
        if found is None:
            self.charge(_ENTRY + _OBJECT + len(value))
            found = self.texts[value] = value
        return found

    def dependencies(self, raw: str, where: Callable[[], str]) -> tuple[Dependency, ...]:
        found = self.lists.get(raw)
        if found is None:
            atoms = []
            for word in raw.split():
                atom = self.atoms.get(word)
                if atom is None:
                    self.charge(_ENTRY + _DEPENDENCY + 2 * _OBJECT + len(word))
                    try:
                        atom = parse_dependency(word, source="", allow_tag=False)
                    except ArchiveError:
                        atom = parse_dependency(word, source=where(), allow_tag=False)
                    self.atoms[word] = atom
                atoms.append(atom)
            self.charge(_ENTRY + 2 * _OBJECT + len(raw) + 8 * len(atoms))
            found = self.lists[raw] = tuple(atoms)
        return found


def package_from_fields(
    fields: Sequence[tuple[str, str, int]],
    *,
    source: str,
    repository: str = "",
    tag: str | None = None,
    shared: _Shared | None = None,
) -> PackageInfo:
    """Build a PackageInfo from one record's ``(letter, value, line)`` fields."""
    shared = shared if shared is not None else _Shared(source, MAX_INDEX_MEMORY)
    shared.charge(_RECORD)
    known: dict[str, str] = {}
    extra: list[tuple[str, str]] = []
    first_line = fields[0][2] if fields else 0
    for letter, value, number in fields:
        if letter in FIELD_ORDER:
            if letter in known:
                raise ArchiveError(f"{source}: line {number}: duplicate field '{letter}:' in one record")
            if letter in _SHARED_FIELDS:
                value = shared.text(value)
            elif letter not in _DEP_FIELDS:
                shared.charge(_OBJECT + len(value))
            known[letter] = value
        else:
            shared.charge(3 * _OBJECT + len(value))
            extra.append((letter, value))

    def where() -> str:
        return f"{source}: record at line {first_line}"

    for letter in "PV":
        if not known.get(letter):
            raise ArchiveError(f"{where()}: missing '{letter}:' field")
    name = known["P"]
    ints: dict[str, int | None] = {}
    for letter in _INT_FIELDS:
        raw = known.get(letter)
        if raw is None:
            ints[letter] = None
        elif (parsed := parse_decimal(raw)) is not None:
            ints[letter] = parsed
        else:
            raise ArchiveError(f"{where()} ({clip(name)}): field '{letter}:' is not a number: "
                               f"{shorten(raw)}")
    deps: dict[str, tuple[Dependency, ...]] = {}
    for letter in _DEP_FIELDS:
        raw = known.get(letter)
        deps[letter] = () if raw is None else shared.dependencies(
            raw, lambda: f"{where()} ({clip(name)}) field '{letter}:'")  # noqa: B023
    return PackageInfo(
        name=name,
        version=known["V"],
        checksum=known.get("C"),
        arch=known.get("A"),
        size=ints["S"],
        installed_size=ints["I"],
        description=known.get("T"),
        url=known.get("U"),
        license=known.get("L"),
        origin=known.get("o"),
        maintainer=known.get("m"),
        build_time=ints["t"],
        commit=known.get("c"),
        provider_priority=ints["k"],
        depends=deps["D"],
        provides=deps["p"],
        install_if=deps["i"],
        replaces=deps["r"],
        replaces_priority=ints["q"],
        extra=tuple(extra),
        repository=repository,
        tag=tag,
    )


def parse_apkindex(
    text: IndexText,
    *,
    source: str,
    description: str | None = None,
    repository: str = "",
    tag: str | None = None,
    max_records: int = MAX_INDEX_RECORDS,
    max_memory: int = MAX_INDEX_MEMORY,
) -> ApkIndex:
    """Parse verified ``APKINDEX`` text (bytes, or ``VerifiedIndex.chunks``); ``source``
    names the index in errors.

    ``description`` is the separate DESCRIPTION member, if the caller has it. The records
    are counted first, so an index of more than ``max_records`` costs one pass over its
    bytes; the rest is parsed one record at a time into shared values, whose estimated
    size may not pass ``max_memory``.
    """
    count = count_records(text)
    if count > max_records:
        raise ArchiveError(f"{source}: {count} records, more than the {max_records} an index "
                           "may hold")
    shared = _Shared(source, max_memory)
    packages = tuple(
        package_from_fields(fields, source=source, repository=repository, tag=tag,
                            shared=shared)
        for fields in iter_records(text, source=source)
    )
    return ApkIndex(description=description, packages=packages)


def _field_lines(pkg: PackageInfo) -> Iterable[str]:
    values: dict[str, str | int | tuple[Dependency, ...] | None] = {
        "C": pkg.checksum, "P": pkg.name, "V": pkg.version, "A": pkg.arch,
        "S": pkg.size, "I": pkg.installed_size, "T": pkg.description, "U": pkg.url,
        "L": pkg.license, "o": pkg.origin, "m": pkg.maintainer, "t": pkg.build_time,
        "c": pkg.commit, "k": pkg.provider_priority, "D": pkg.depends, "p": pkg.provides,
        "i": pkg.install_if, "r": pkg.replaces, "q": pkg.replaces_priority,
    }
    for letter in FIELD_ORDER:
        value = values[letter]
        if value is None or value == ():
            continue
        if isinstance(value, tuple):
            yield f"{letter}:{format_dependencies(value)}"
        else:
            yield f"{letter}:{value}"
    for letter, text in pkg.extra:
        yield f"{letter}:{text}"


def format_package_record(pkg: PackageInfo) -> bytes:
    """One record's lines, each ending in a newline, without the blank separator line."""
    lines = list(_field_lines(pkg))
    if any("\n" in line for line in lines):
        raise ArchiveError(f"package {pkg.label}: a field value contains a newline")
    return "".join(line + "\n" for line in lines).encode("utf-8")


def format_apkindex(packages: Iterable[PackageInfo]) -> bytes:
    """The ``APKINDEX`` text for ``packages`` in the given order (each record ends with a blank line)."""
    return b"".join(format_package_record(pkg) + b"\n" for pkg in packages)
