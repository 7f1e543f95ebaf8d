"""The ``APKINDEX`` text format: parse records into PackageInfo and write them back.

Input is the already verified ``APKINDEX`` member (signature checks live in
``composer.apk.signing``).  Writing a parsed index reproduces it byte for byte:
optional fields remember whether they were present, and unknown fields are
kept in order after the known ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from composer.apk.depends import Dependency, format_dependencies, parse_dependencies
from composer.errors import ArchiveError
from composer.numbers import clip, parse_decimal, shorten

__all__ = [
    "PackageInfo",
    "ApkIndex",
    "parse_apkindex",
    "format_apkindex",
    "format_package_record",
    "parse_records",
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


def parse_records(text: bytes, *, source: str) -> list[list[tuple[str, str, int]]]:
    """Split record text into records of ``(letter, value, line number)``.

    A blank line ends a record; every other line must be ``X:value``.
    """
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArchiveError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    records: list[list[tuple[str, str, int]]] = []
    current: list[tuple[str, str, int]] = []
    for number, line in enumerate(decoded.split("\n"), start=1):
        if line == "":
            if current:
                records.append(current)
                current = []
            continue
        if len(line) < 2 or line[1] != ":":
            raise ArchiveError(f"{source}: line {number}: expected 'X:value', got {shorten(line)}")
        current.append((line[0], line[2:], number))
    if current:
        records.append(current)
    return records


def package_from_fields(
    fields: Sequence[tuple[str, str, int]],
    *,
    source: str,
    repository: str = "",
    tag: str | None = None,
) -> PackageInfo:
    """Build a PackageInfo from one record's ``(letter, value, line)`` fields."""
    known: dict[str, str] = {}
    extra: list[tuple[str, str]] = []
    first_line = fields[0][2] if fields else 0
    for letter, value, number in fields:
        if letter in FIELD_ORDER:
            if letter in known:
                raise ArchiveError(f"{source}: line {number}: duplicate field '{letter}:' in one record")
            known[letter] = value
        else:
            extra.append((letter, value))
    where = f"{source}: record at line {first_line}"
    for letter in "PV":
        if not known.get(letter):
            raise ArchiveError(f"{where}: missing '{letter}:' field")
    name = known["P"]
    ints: dict[str, int | None] = {}
    for letter in _INT_FIELDS:
        raw = known.get(letter)
        if raw is None:
            ints[letter] = None
        elif (parsed := parse_decimal(raw)) is not None:
            ints[letter] = parsed
        else:
            raise ArchiveError(f"{where} ({clip(name)}): field '{letter}:' is not a number: "
                               f"{shorten(raw)}")
    deps: dict[str, tuple[Dependency, ...]] = {}
    for letter in _DEP_FIELDS:
        raw = known.get(letter)
        if raw is None:
            deps[letter] = ()
            continue
        deps[letter] = parse_dependencies(raw, source=f"{where} ({clip(name)}) field '{letter}:'",
                                          allow_tag=False)
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
    text: bytes,
    *,
    source: str,
    description: str | None = None,
    repository: str = "",
    tag: str | None = None,
) -> ApkIndex:
    """Parse verified ``APKINDEX`` bytes; ``source`` names the index in errors.

    ``description`` is the separate DESCRIPTION member, if the caller has it.
    """
    packages = tuple(
        package_from_fields(fields, source=source, repository=repository, tag=tag)
        for fields in parse_records(text, source=source)
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
