"""Deterministic stand-ins for what package scripts would have done; no script ever runs.

Scripts may belong to another architecture and would make the build depend on
the host, so composer replays the few effects that matter for a working root
(busybox applet links, system accounts, login shells, the CA bundle; the
account and shell files themselves are :mod:`composer.system`'s) and records
every script it did not run, line by line, for the build manifest.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from composer.errors import InstallError
from composer.numbers import parse_decimal
from composer.system.accounts import AccountError, AccountFiles, UserSpec
from composer.system.paths import make_dirs, resolve_dir
from composer.system.shells import add_shells
from composer.tree import Entry, EntryType, FileTree, resolve_symlink_target

BUSYBOX_DIRS = ("", "bin", "sbin", "usr/bin", "usr/sbin")
"""busybox's install-location codes 0..4 (``BB_DIR_ROOT`` .. ``BB_DIR_USR_SBIN``)."""

_APPLET_NAME = re.compile(rb"^[A-Za-z0-9_.\[\]+-]{1,64}$")


class AppletTableError(InstallError):
    """The busybox binary's applet tables could not be found."""


# ---------------------------------------------------------------- busybox applets


def busybox_applet_paths(binary: bytes, *, source: str = "bin/busybox") -> list[str]:
    """What ``busybox --list-full`` prints, read from the binary's own tables.

    busybox's build (``applets/applet_tables.c``) stores ``applet_names`` as one
    sorted run of NUL-terminated names ending in an empty name, and
    ``applet_install_loc`` as one nibble per applet (two per byte, even index in
    the low nibble) holding a directory code 0..4. The names are found by their
    first two entries ``[`` and ``[[`` (the ``test`` applets Alpine always
    builds); the location table is the unique run of ceil(n/2) bytes whose
    nibbles are all directory codes 1..4 (a padding high nibble of 0 when n is
    odd). Anything else is refused rather than guessed.
    """
    names = _applet_names(binary, source)
    table = _install_locations(binary, len(names), source)
    out = []
    for index, name in enumerate(names):
        code = (table[index // 2] >> (4 * (index % 2))) & 0x0F
        directory = BUSYBOX_DIRS[code]
        out.append(f"{directory}/{name}" if directory else name)
    return out


def _applet_names(binary: bytes, source: str) -> list[str]:
    anchor = b"\0[\0[[\0"
    start = binary.find(anchor)
    if start < 0 or binary.find(anchor, start + 1) >= 0:
        found = "no" if start < 0 else "more than one"
        raise AppletTableError(f"{source}: {found} applet name table ('[', '[[', ...) found")
    start += 1
    end = binary.find(b"\0\0", start)
    raw = binary[start:end].split(b"\0")
    if len(raw) < 2 or any(not _APPLET_NAME.match(n) for n in raw) or raw != sorted(set(raw)):
        raise AppletTableError(f"{source}: the applet name table is not a sorted list of names")
    return [n.decode("ascii") for n in raw]


# 1 for a byte whose two nibbles are both directory codes 1..4, else 0.
_LOCATION_BYTES = bytes(int(1 <= b & 15 <= 4 and 1 <= b >> 4 <= 4) for b in range(256))


def _install_locations(binary: bytes, count: int, source: str) -> bytes:
    size = (count + 1) // 2
    # Every maximal run of at least count // 2 such bytes, found on a 0/1 mask of the
    # binary with bytes.find (a regex scan of a megabyte costs tens of milliseconds).
    mask = binary.translate(_LOCATION_BYTES)
    needle = b"\1" * (count // 2)
    found = []
    position = mask.find(needle)
    while position >= 0:
        s = position
        e = mask.find(b"\0", s + len(needle))
        e = len(mask) if e < 0 else e
        if count % 2 == 0:
            if e - s == size:
                found.append(s)
        elif e < len(binary) and 1 <= binary[e] & 15 <= 4 and binary[e] >> 4 == 0:
            if e - s == count // 2:
                found.append(s)
        position = mask.find(needle, e)
    if len(found) != 1:
        raise AppletTableError(
            f"{source}: expected one applet install-location table of {size} bytes "
            f"for {count} applets, found {len(found)}")
    return binary[found[0]:found[0] + size]


def install_busybox_links(tree: FileTree, *, binary_path: str = "bin/busybox",
                          mtime: int = 0) -> list[str]:
    """``busybox --install -s``: absolute symlinks to ``/<binary_path>`` for absent applets.

    Existing paths (any type, even a dangling link) are left alone, as busybox
    does on EEXIST. Missing bin dirs are created 0755 like the post-install
    ``mkdir -p``. Returns the created link paths.
    """
    entry = tree.get(binary_path)
    if entry is None or entry.type != EntryType.FILE or entry.blob is None:
        raise InstallError(f"busybox applet links: {binary_path} is not a file in the tree")
    created = []
    folders: dict[str, str | None] = {}  # the applets share four folders; links never make one
    for applet in busybox_applet_paths(entry.blob.read(), source=binary_path):
        directory, _, name = applet.rpartition("/")
        if directory not in folders:
            if directory:
                make_dirs(tree, directory, mtime)
            folders[directory] = resolve_dir(tree, directory) if directory else ""
        real_dir = folders[directory]
        if real_dir is None:
            continue
        link = f"{real_dir}/{name}" if real_dir else name
        if link in tree:
            continue
        tree.put(Entry(path=link, type=EntryType.SYMLINK, mode=0o777, mtime=mtime,
                       target="/" + binary_path))
        created.append(link)
    return created


# ---------------------------------------------------------------- CA bundle


CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
CA_SOURCES = ("usr/share/ca-certificates", "usr/local/share/ca-certificates")


def rebuild_ca_bundle(tree: FileTree, *, mtime: int = 0) -> int:
    """``update-ca-certificates``' bundle: every ``*.crt`` below the CA folders, sorted by path.

    Each certificate ends with a newline in the bundle. Hash links in
    ``etc/ssl/certs`` are not made. Returns the number of certificates.
    """
    parts: list[bytes] = []
    for root in CA_SOURCES:
        for path in sorted(p for p in tree.children(root) if p.endswith(".crt")):
            entry = tree.entries[path]
            if entry.type == EntryType.SYMLINK:
                target = resolve_symlink_target(path, entry.target)
                entry = tree.get(target) if target else None  # type: ignore[assignment]
            if entry is None or entry.type != EntryType.FILE or entry.blob is None:
                continue
            data = entry.blob.read()
            parts.append(data if data.endswith(b"\n") else data + b"\n")
    make_dirs(tree, "etc/ssl/certs", mtime)
    tree.put(Entry(path=CA_BUNDLE, type=EntryType.FILE, mode=0o644, mtime=mtime,
                   blob=tree.store.from_bytes(b"".join(parts))))
    return len(parts)


# ---------------------------------------------------------------- scripts


@dataclass
class ScriptReport:
    """A script that was NOT run, what composer did in its place, and what it skipped."""

    package: str
    script: str
    effects: list[str] = field(default_factory=list)
    unhandled_lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@dataclass
class ScriptContext:
    """What running a package's scripts needs: the tree, account files and deferred effects."""

    tree: FileTree
    accounts: AccountFiles
    mtime: int
    busybox_install: list[str] = field(default_factory=list)
    ca_update: bool = False
    shells: list[str] = field(default_factory=list)


_TRIVIAL = re.compile(r"^(exit( \d+)?|true|:|set -[a-z]+|return( \d+)?)$")
_KEYWORDS = {"then", "do", "else", "{", "(", "!", "exec"}
_REDIRECT = re.compile(r"(?:^|(?<=\s))\d*(?:>>?|<)(?:&\d+|\s*[^\s;&|]+)")


def emulate_script(ctx: ScriptContext, package: str, script: str, body: bytes) -> ScriptReport:
    """Apply the recognised commands of one script; list every other line as unhandled."""
    report = ScriptReport(package=package, script=script)
    lines = body.decode("utf-8", "replace").splitlines()
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#") or _TRIVIAL.match(line):
            continue
        try:
            words = _shell_words(line)
        except ValueError:
            report.unhandled_lines.append(line)
            continue
        handled_all = True
        for command in _split_commands(words):
            if not command or _TRIVIAL.match(" ".join(command)):
                continue
            try:
                handled = _run_command(ctx, command, report)
            except (AccountError, ValueError) as exc:
                report.failures.append(f"line {number}: {' '.join(command)}: {exc}")
                handled = True
            handled_all = handled_all and handled
        if not handled_all:
            report.unhandled_lines.append(line)
    return report


def _shell_words(line: str) -> list[str]:
    line = _REDIRECT.sub(" ", line)
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def _split_commands(words: list[str]) -> list[list[str]]:
    commands: list[list[str]] = [[]]
    for word in words:
        if word in (";", "&&", "||", "|", "&", ";;"):
            commands.append([])
        else:
            commands[-1].append(word)
    out = []
    for command in commands:
        while command and command[0] in _KEYWORDS:
            command = command[1:]
        out.append(command)
    return out


def _run_command(ctx: ScriptContext, command: list[str], report: ScriptReport) -> bool:
    program = command[0].rsplit("/", 1)[-1]
    args = command[1:]
    if any("$" in a or "`" in a for a in command):
        return False
    if program == "busybox" and args[:1] == ["mkdir"]:
        program, args = "mkdir", args[1:]
    if program in ("busybox", "busybox-extras") and args[:1] == ["--install"]:
        binary = command[0].lstrip("/") if command[0].startswith("/") else f"bin/{program}"
        ctx.busybox_install.append(binary)
        report.effects.append(f"applet links to /{binary} ({program} --install -s)")
        return True
    if program == "mkdir" and args[:1] == ["-p"] and all(a.startswith("/") for a in args[1:]):
        for directory in args[1:]:
            make_dirs(ctx.tree, directory.strip("/"), ctx.mtime)
        report.effects.append(f"mkdir -p {' '.join(args[1:])}")
        return True
    if program == "addgroup":
        return _addgroup(ctx, args, report)
    if program == "adduser":
        return _adduser(ctx, args, report)
    if program == "add-shell" and args and all(a.startswith("/") for a in args):
        ctx.shells.extend(args)
        report.effects.append(f"add-shell {' '.join(args)}")
        return True
    if program == "update-ca-certificates":
        ctx.ca_update = True
        report.effects.append("rebuilt /" + CA_BUNDLE)
        return True
    return False


def _getopt(args: list[str], with_value: str, flags: str,
            long_names: dict[str, str]) -> tuple[dict[str, str], list[str]] | None:
    """busybox getopt32 over short and long options; None on anything unexpected."""
    opts: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i + 1:])
            break
        if arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            letter = long_names.get(key)
            if letter is None:
                return None
            if letter in with_value:
                if not eq:
                    i += 1
                    if i >= len(args):
                        return None
                    value = args[i]
                opts[letter] = value
            else:
                opts[letter] = ""
        elif arg.startswith("-") and len(arg) > 1:
            j = 1
            while j < len(arg):
                letter = arg[j]
                if letter in with_value:
                    value = arg[j + 1:]
                    if not value:
                        i += 1
                        if i >= len(args):
                            return None
                        value = args[i]
                    opts[letter] = value
                    break
                if letter not in flags:
                    return None
                opts[letter] = ""
                j += 1
        else:
            rest.append(arg)
        i += 1
    return opts, rest


def _addgroup(ctx: ScriptContext, args: list[str], report: ScriptReport) -> bool:
    parsed = _getopt(args, "g", "S", {"gid": "g", "system": "S"})
    if parsed is None or not 1 <= len(parsed[1]) <= 2:
        return False
    opts, rest = parsed
    if len(rest) == 2:
        if ctx.accounts.add_member(rest[0], rest[1]):
            report.effects.append(f"added user {rest[0]} to group {rest[1]}")
        return True
    name = rest[0]
    if ctx.accounts.group(name) is not None:
        report.effects.append(f"group {name} already exists")
        return True
    gid_text = opts.get("g")
    wanted = parse_decimal(gid_text) if gid_text is not None else None
    if gid_text is not None and wanted is None:
        return False
    gid = ctx.accounts.add_group(name, gid=wanted, system="S" in opts)
    report.effects.append(f"created group {name} (gid {gid})")
    return True


def _adduser(ctx: ScriptContext, args: list[str], report: ScriptReport) -> bool:
    parsed = _getopt(args, "hgsGuk", "DSH",
                     {"home": "h", "gecos": "g", "shell": "s", "ingroup": "G",
                      "disabled-password": "D", "empty-password": "D", "system": "S",
                      "no-create-home": "H", "uid": "u", "skel": "k"})
    if parsed is None or not 1 <= len(parsed[1]) <= 2:
        return False
    opts, rest = parsed
    if not opts and len(rest) == 2:
        if ctx.accounts.add_member(rest[0], rest[1]):
            report.effects.append(f"added user {rest[0]} to group {rest[1]}")
        return True
    name = rest[0]
    if ctx.accounts.user(name) is not None:
        report.effects.append(f"user {name} already exists")
        return True
    uid_text = opts.get("u")
    uid = parse_decimal(uid_text) if uid_text is not None else None
    if uid_text is not None and uid is None:
        return False
    spec = UserSpec(name=name, uid=uid,
                    group=opts.get("G"), home=opts.get("h"), shell=opts.get("s"),
                    gecos=opts.get("g"), system="S" in opts, create_home="H" not in opts)
    new_uid, gid = ctx.accounts.add_user(spec)
    report.effects.append(f"created user {name} (uid {new_uid}, gid {gid})")
    return True


def finish_scripts(ctx: ScriptContext, *, ca_certificates_installed: bool) -> list[str]:
    """Apply the deferred effects once every package is in place; returns what was done."""
    done = []
    for path in ctx.accounts.save(mtime=ctx.mtime):
        done.append(f"updated /{path}")
    if ctx.shells:
        for shell in add_shells(ctx.tree, ctx.shells, mtime=ctx.mtime):
            done.append(f"added {shell} to /etc/shells")
    for binary in dict.fromkeys(ctx.busybox_install):
        if binary in ctx.tree:
            links = install_busybox_links(ctx.tree, binary_path=binary, mtime=ctx.mtime)
            done.append(f"{len(links)} applet links to /{binary}")
    if ctx.ca_update and ca_certificates_installed:
        count = rebuild_ca_bundle(ctx.tree, mtime=ctx.mtime)
        done.append(f"/{CA_BUNDLE} from {count} certificates")
    return done

