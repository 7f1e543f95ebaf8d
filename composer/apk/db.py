"""The apk-tools 2.x installed database: ``lib/apk/db/{installed,triggers,scripts.tar}``, world.

Pure format code. The writer reproduces apk-tools 2.x byte for byte
(``apk_db_fdb_write``, ``apk_pkg_write_index_header``, ``apk_tar_write_entry``),
so a database read from a real Alpine root and written back is identical, and
the real ``apk`` can manage a root filesystem composer produced.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from composer.errors import ArchiveError
from composer.numbers import parse_decimal, parse_octal, shorten
from composer.tarread import read_tar_bytes

INSTALLED_PATH = "lib/apk/db/installed"
TRIGGERS_PATH = "lib/apk/db/triggers"
SCRIPTS_PATH = "lib/apk/db/scripts.tar"
LOCK_PATH = "lib/apk/db/lock"
WORLD_PATH = "etc/apk/world"
ARCH_PATH = "etc/apk/arch"
REPOSITORIES_PATH = "etc/apk/repositories"
KEYS_DIR = "etc/apk/keys"

SCRIPT_ACTIONS = ("pre-install", "post-install", "pre-deinstall", "post-deinstall",
                  "pre-upgrade", "post-upgrade", "trigger")
"""apk's script types, in apk-tools' own order (``apk_script_types``)."""

_INFO_LETTERS = "CPVASITULomtck"
_LIST_LETTERS = {"D": "depends", "p": "provides", "i": "install_if"}
_INSTALLED_LETTERS = {"r", "q", "s", "f", "g"}


def q1_from_hex(sha1_hex: str) -> str:
    """apk's ``Q1`` text form of a SHA-1 digest given in hex (as in the PAX checksum record)."""
    try:
        raw = binascii.unhexlify(sha1_hex)
    except (binascii.Error, ValueError) as exc:
        raise ArchiveError(f"checksum {sha1_hex!r} is not hexadecimal") from exc
    if len(raw) != 20:
        raise ArchiveError(f"checksum {sha1_hex!r} is not a SHA-1 digest")
    return "Q1" + base64.b64encode(raw).decode("ascii")


def q1_of(data: bytes) -> str:
    """``Q1`` + base64(SHA-1(data)): apk's digest of file content or a symlink target."""
    return "Q1" + base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")


def xattr_digest(xattrs: Iterable[tuple[str, bytes]]) -> str:
    """apk's ``Q1`` digest of a file's xattrs (``apk_fileinfo_hash_xattr_array``), "" if none.

    Sorted by name; each name and value is hashed as a big-endian 32-bit length then bytes.
    """
    items = sorted(xattrs, key=lambda kv: kv[0].encode("utf-8", "surrogateescape"))
    if not items:
        return ""
    digest = hashlib.sha1()
    for name, value in items:
        raw_name = name.encode("utf-8", "surrogateescape")
        digest.update(struct.pack(">I", len(raw_name)) + raw_name)
        digest.update(struct.pack(">I", len(value)) + value)
    return "Q1" + base64.b64encode(digest.digest()).decode("ascii")


@dataclass(frozen=True)
class Acl:
    """Owner, mode and xattr digest of a database file or directory."""

    uid: int
    gid: int
    mode: int
    xattr_digest: str = ""

    def format(self) -> str:
        text = f"{self.uid}:{self.gid}:{self.mode:o}"
        return f"{text}:{self.xattr_digest}" if self.xattr_digest else text

    @classmethod
    def parse(cls, text: str, *, where: str) -> Acl:
        parts = text.split(":")
        if len(parts) not in (3, 4):
            raise ArchiveError(f"{where}: bad owner/mode {shorten(text)} "
                               "(want uid:gid:mode[:digest])")
        uid, gid, mode = parse_decimal(parts[0]), parse_decimal(parts[1]), parse_octal(parts[2])
        if uid is None or gid is None or mode is None:
            raise ArchiveError(f"{where}: bad owner/mode {shorten(text)}")
        return cls(uid, gid, mode, parts[3] if len(parts) == 4 else "")


DEFAULT_DIR_ACL = Acl(0, 0, 0o755)
DEFAULT_FILE_ACL = Acl(0, 0, 0o644)


@dataclass
class DbFile:
    """One ``R:`` entry: a file (or symlink, hard link) owned by the package."""

    name: str
    acl: Acl = DEFAULT_FILE_ACL
    digest: str = ""
    extra: list[str] = field(default_factory=list)


@dataclass
class DbDir:
    """One ``F:`` entry: a directory the package owns and the files it owns in it."""

    path: str
    acl: Acl = DEFAULT_DIR_ACL
    files: list[DbFile] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


@dataclass
class InstalledPackage:
    """One record of ``lib/apk/db/installed``; ``extra`` keeps lines with unknown letters."""

    checksum: str
    name: str
    version: str
    arch: str = ""
    size: int = 0
    installed_size: int = 0
    description: str = ""
    url: str = ""
    license: str = ""
    origin: str = ""
    maintainer: str = ""
    build_time: int = 0
    commit: str = ""
    provider_priority: int = 0
    depends: list[str] = field(default_factory=list)
    provides: list[str] = field(default_factory=list)
    install_if: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    replaces: list[str] = field(default_factory=list)
    replaces_priority: int = 0
    repository_tag: str = ""
    flags: str = ""
    extra: list[tuple[str, str]] = field(default_factory=list)
    dirs: list[DbDir] = field(default_factory=list)

    def paths(self) -> list[str]:
        """Every file path (not directories) the package owns, in database order."""
        out: list[str] = []
        for d in self.dirs:
            prefix = d.path + "/" if d.path else ""
            out.extend(prefix + f.name for f in d.files)
        return out

    def dir_paths(self) -> list[str]:
        return [d.path for d in self.dirs]


# ---------------------------------------------------------------- installed


def parse_installed(data: bytes, *, source: str = INSTALLED_PATH) -> list[InstalledPackage]:
    """Parse an installed database; records keep the file's order."""
    text = _decode(data, source)
    packages: list[InstalledPackage] = []
    record: list[tuple[int, str]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line == "":
            if record:
                packages.append(_parse_record(record, source))
                record = []
            continue
        record.append((number, line))
    if record:
        packages.append(_parse_record(record, source))
    return packages


def _parse_record(lines: list[tuple[int, str]], source: str) -> InstalledPackage:
    header: dict[str, str] = {}
    pkg = InstalledPackage(checksum="", name="", version="")
    current_dir: DbDir | None = None
    current_file: DbFile | None = None
    for number, line in lines:
        where = f"{source} line {number}"
        if len(line) < 2 or line[1] != ":":
            raise ArchiveError(f"{where}: expected 'X:value', got {shorten(line)}")
        letter, value = line[0], line[2:]
        if letter == "F":
            current_dir = DbDir(path=value)
            current_file = None
            pkg.dirs.append(current_dir)
        elif letter == "M" and current_dir is not None and current_file is None:
            current_dir.acl = Acl.parse(value, where=where)
        elif letter == "R":
            if current_dir is None:
                raise ArchiveError(f"{where}: file {value!r} before any F: directory line")
            current_file = DbFile(name=value)
            current_dir.files.append(current_file)
        elif letter == "a" and current_file is not None:
            current_file.acl = Acl.parse(value, where=where)
        elif letter == "Z" and current_file is not None:
            current_file.digest = value
        elif current_file is not None:
            current_file.extra.append(line)
        elif current_dir is not None:
            current_dir.extra.append(line)
        elif letter in header and letter not in ("D", "p", "i", "r", "g"):
            raise ArchiveError(f"{where}: field {letter}: given twice in one package")
        else:
            header[letter] = value
            _set_header(pkg, letter, value, where)
    if not pkg.name or not pkg.version:
        first = lines[0][0]
        raise ArchiveError(f"{source} line {first}: package record without P: or V:")
    return pkg


def _set_header(pkg: InstalledPackage, letter: str, value: str, where: str) -> None:
    text_fields = {"C": "checksum", "P": "name", "V": "version", "A": "arch", "T": "description",
                   "U": "url", "L": "license", "o": "origin", "m": "maintainer", "c": "commit",
                   "s": "repository_tag", "f": "flags"}
    int_fields = {"S": "size", "I": "installed_size", "t": "build_time",
                  "k": "provider_priority", "q": "replaces_priority"}
    if letter in text_fields:
        setattr(pkg, text_fields[letter], value)
    elif letter in int_fields:
        number = parse_decimal(value)
        if number is None:
            raise ArchiveError(f"{where}: {letter}: value {shorten(value)} is not an integer")
        setattr(pkg, int_fields[letter], number)
    elif letter in _LIST_LETTERS or letter in ("r", "g"):
        attr = {"r": "replaces", "g": "tags"}.get(letter) or _LIST_LETTERS[letter]
        getattr(pkg, attr).extend(value.split())
    else:
        pkg.extra.append((letter, value))


def format_installed(packages: Iterable[InstalledPackage]) -> bytes:
    """The database text, records in the given order (apk 2.x writes them sorted by name)."""
    out = io.StringIO()
    for pkg in packages:
        _write_record(out, pkg)
    return out.getvalue().encode("utf-8")


def _write_record(out: io.StringIO, pkg: InstalledPackage) -> None:
    w = out.write
    w(f"C:{pkg.checksum}\nP:{pkg.name}\nV:{pkg.version}\nA:{pkg.arch}\nS:{pkg.size}\n"
      f"I:{pkg.installed_size}\nT:{pkg.description}\nU:{pkg.url}\nL:{pkg.license}\n")
    if pkg.origin:
        w(f"o:{pkg.origin}\n")
    if pkg.maintainer:
        w(f"m:{pkg.maintainer}\n")
    if pkg.build_time:
        w(f"t:{pkg.build_time}\n")
    if pkg.commit:
        w(f"c:{pkg.commit}\n")
    if pkg.provider_priority:
        w(f"k:{pkg.provider_priority}\n")
    for letter, attr in _LIST_LETTERS.items():
        items = getattr(pkg, attr)
        if items:
            w(f"{letter}:{' '.join(items)}\n")
    if pkg.tags:
        w(f"g:{' '.join(pkg.tags)}\n")
    if pkg.replaces:
        w(f"r:{' '.join(pkg.replaces)}\n")
    if pkg.replaces_priority:
        w(f"q:{pkg.replaces_priority}\n")
    if pkg.repository_tag:
        w(f"s:{pkg.repository_tag}\n")
    if pkg.flags:
        w(f"f:{pkg.flags}\n")
    for letter, value in pkg.extra:
        w(f"{letter}:{value}\n")
    for d in pkg.dirs:
        w(f"F:{d.path}\n")
        if d.acl != DEFAULT_DIR_ACL:
            w(f"M:{d.acl.format()}\n")
        for line in d.extra:
            w(line + "\n")
        for f in d.files:
            w(f"R:{f.name}\n")
            if f.acl != DEFAULT_FILE_ACL:
                w(f"a:{f.acl.format()}\n")
            if f.digest:
                w(f"Z:{f.digest}\n")
            for line in f.extra:
                w(line + "\n")
    w("\n")


# ---------------------------------------------------------------- world, triggers


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArchiveError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def parse_world(data: bytes, *, source: str = WORLD_PATH) -> list[str]:
    """The constraints in ``etc/apk/world`` (whitespace separated), in file order."""
    return _decode(data, source).split()


def format_world(constraints: Iterable[str]) -> bytes:
    """Sorted, one per line, each ending in a newline; an empty world is a lone newline."""
    items = sorted(set(constraints))
    if not items:
        return b"\n"
    return ("\n".join(items) + "\n").encode("utf-8")


@dataclass(frozen=True)
class TriggerLine:
    """One ``lib/apk/db/triggers`` line: a package checksum and the globs it watches."""

    checksum: str
    globs: tuple[str, ...]


def parse_triggers(data: bytes, *, source: str = TRIGGERS_PATH) -> list[TriggerLine]:
    out = []
    for number, line in enumerate(_decode(data, source).splitlines(), start=1):
        words = line.split()
        if not words:
            continue
        if len(words) < 2:
            raise ArchiveError(f"{source} line {number}: checksum without trigger globs")
        out.append(TriggerLine(words[0], tuple(words[1:])))
    return out


def format_triggers(lines: Iterable[TriggerLine]) -> bytes:
    return "".join(f"{t.checksum} {' '.join(t.globs)}\n" for t in lines).encode("utf-8")


# ---------------------------------------------------------------- scripts.tar


@dataclass(frozen=True)
class ScriptFile:
    """One stored maintainer script: package identity, action and body."""

    name: str
    version: str
    checksum: str
    action: str
    data: bytes
    mtime: int

    @property
    def member_name(self) -> str:
        return f"{self.name}-{self.version}.{self.checksum}.{self.action}"


def _octal(value: int, width: int, *, nul: bool = True) -> bytes:
    """apk's ``put_octal``: zero-padded octal digits, NUL-terminated only when ``nul``."""
    room = width - 1 if nul else width
    digits = f"{value:o}".encode("ascii")
    if len(digits) > room:
        raise ArchiveError(f"value {value} does not fit a {width}-byte tar field")
    return digits.rjust(room, b"0") + (b"\0" if nul else b"")


def _script_header(script: ScriptFile) -> bytes:
    name = script.member_name.encode("utf-8")
    if len(name) > 99:
        raise ArchiveError(f"scripts.tar: member name {script.member_name!r} is too long")
    header = bytearray(512)
    header[0:len(name)] = name
    header[100:108] = _octal(0o755, 8)
    header[108:116] = _octal(0, 8)
    header[116:124] = _octal(0, 8)
    header[124:136] = _octal(len(script.data), 12, nul=False)
    header[136:148] = _octal(script.mtime, 12, nul=False)
    header[148:156] = b" " * 8
    header[156:157] = b"0"
    header[257:265] = b"ustar  \0"
    header[265:269] = b"root"
    header[297:301] = b"root"
    header[148:155] = _octal(sum(header), 7)
    return bytes(header)


def format_scripts_tar(scripts: Sequence[ScriptFile]) -> bytes:
    """``scripts.tar`` as apk 2.x writes it: old-GNU headers, 0755 root, two zero blocks."""
    out = bytearray()
    for script in scripts:
        out += _script_header(script)
        out += script.data
        out += b"\0" * (-len(script.data) % 512)
    out += b"\0" * 1024
    return bytes(out)


def parse_scripts_tar(data: bytes, *, source: str = SCRIPTS_PATH) -> list[ScriptFile]:
    """Read a ``scripts.tar``; member names are split from the right as apk does."""
    return [_script_from_name(f.name, f.data, f.mtime, source)
            for f in read_tar_bytes(data, source=source, regular_only=False)]


def _script_from_name(member: str, body: bytes, mtime: int, source: str) -> ScriptFile:
    head, _, action = member.rpartition(".")
    namever, _, checksum = head.rpartition(".")
    if action not in SCRIPT_ACTIONS or not checksum or not namever:
        raise ArchiveError(f"{source}: member {shorten(member)} is not "
                           "<name>-<ver>.<csum>.<action>")
    # pkgver is "<ver>-r<N>": the name ends before the second-to-last "-".
    parts = namever.rsplit("-", 2)
    if len(parts) != 3:
        raise ArchiveError(f"{source}: member {shorten(member)} has no <name>-<version> prefix")
    return ScriptFile(name=parts[0], version=f"{parts[1]}-{parts[2]}", checksum=checksum,
                      action=action, data=body, mtime=mtime)
