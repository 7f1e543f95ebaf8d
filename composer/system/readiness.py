"""Checks of a finished tree that boots: will init start, can anyone log in, and does the
image carry any one machine's identity.

A tree that fails them still builds into a valid ISO, and then loops at boot ("can't open
/dev/ttyS0" forever when ``/sbin/openrc`` is missing) or leaves nobody a way in; refusing it
before anything is written names the mistake instead.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from composer.system.paths import is_executable, resolve_entry
from composer.tree import EntryType, FileTree

INIT = "sbin/init"
INITTAB = "etc/inittab"
SEARCH_PATH = ("sbin", "usr/sbin", "bin", "usr/bin")
"""busybox init's PATH when it runs inittab entries."""
SHELL_CHARACTERS = re.compile(r"[~`!$^&*()=|\\{}\[\];\"'<>?]")
"""busybox init hands a command holding one of these to ``/bin/sh -c`` (init.c)."""
ACTIONS = ("sysinit", "wait", "once", "respawn", "askfirst", "ctrlaltdel", "shutdown",
           "restart")
BUSYBOX_DEFAULT_INITTAB = ("/bin/sh",)
"""What busybox init runs without an /etc/inittab: rcS if present, and shells (``-/bin/sh``)."""

MACHINE_IDENTITY = (
    "etc/ssh/ssh_host_*key", "etc/ssh/ssh_host_*key.pub", "etc/dropbear/dropbear_*_host_key",
    "etc/machine-id", "var/lib/dbus/machine-id", "var/lib/seedrng/seed.*",
    "var/lib/misc/random-seed", "var/lib/systemd/random-seed",
)
"""Files that must differ on every machine: SSH host keys (Alpine's sshd and dropbear
services make them at first boot), the machine id (OpenRC's ``machine-id`` service) and
random seeds (``seedrng``). An image holding one hands it to every VM booted from it."""


@dataclass(frozen=True)
class Problem:
    """One reason the tree would not boot or log anyone in."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def inittab_commands(text: str) -> list[tuple[int, str, str]]:
    """(line number, action, process) of each entry of a busybox inittab."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split(":", 3)
        if len(fields) != 4:
            entries.append((number, "", stripped))
            continue
        entries.append((number, fields[2].strip(), fields[3].strip()))
    return entries


def _program(tree: FileTree, word: str) -> str | None:
    """The tree path a command word runs (absolute, or found on busybox init's PATH)."""
    if "/" in word:
        return word.lstrip("/")
    return next((f"{d}/{word}" for d in SEARCH_PATH if resolve_entry(tree, f"{d}/{word}")),
                f"{SEARCH_PATH[0]}/{word}")


def check_inittab(tree: FileTree) -> list[Problem]:
    """Each program ``/etc/inittab`` runs exists in the tree and is executable."""
    problems: list[Problem] = []
    if not is_executable(tree, INIT):
        problems.append(Problem("/sbin/init", "missing or not executable; the kernel starts it "
                                "as the first process (add busybox)"))
    entry = resolve_entry(tree, INITTAB)
    if entry is None or entry.type != EntryType.FILE or entry.blob is None:
        for shell in BUSYBOX_DEFAULT_INITTAB:
            if not is_executable(tree, shell):
                problems.append(Problem("/etc/inittab", f"absent, so busybox init runs {shell}, "
                                        "which the image lacks"))
        return problems
    text = entry.blob.read().decode("utf-8", "replace")
    for number, action, process in inittab_commands(text):
        where = f"/etc/inittab line {number}"
        if action not in ACTIONS:
            problems.append(Problem(where, f"not an inittab entry 'id:runlevels:action:process' "
                                    f"with an action of {', '.join(ACTIONS)}"))
            continue
        command = process.removeprefix("-").strip()
        words = command.split()
        if not words:
            problems.append(Problem(where, "runs nothing"))
            continue
        wanted = [words[0]] if words[0].startswith("/") or not SHELL_CHARACTERS.search(command) \
            else []
        if SHELL_CHARACTERS.search(command):
            wanted.insert(0, "/bin/sh")
        for word in wanted:
            program = _program(tree, word)
            if program is None or not is_executable(tree, program):
                problems.append(Problem(where, f"runs {word}, which is not an executable file "
                                        f"in the image (add the package that provides it, or "
                                        f"change /etc/inittab)"))
    return problems


def check_login_shells(tree: FileTree) -> list[Problem]:
    """Every account someone can log into (a password hash, an empty password, or SSH keys)
    has a shell that exists and is executable: login and sshd refuse it otherwise."""
    passwd = _table(tree, "etc/passwd")
    shadow = {row[0]: row[1] for row in _table(tree, "etc/shadow") if len(row) > 1}
    problems = []
    for row in passwd:
        if len(row) < 7:
            continue
        name, home, shell = row[0], row[5], row[6]
        field = shadow.get(name, "*")
        has_keys = resolve_entry(tree, f"{home.strip('/')}/.ssh/authorized_keys") is not None
        can_log_in = field == "" or field.startswith("$") or has_keys
        if can_log_in and shell and not is_executable(tree, shell):
            problems.append(Problem(f"/etc/passwd {name}", f"login shell {shell} is not an "
                                    "executable file in the image (add the package that provides "
                                    "it, or choose another shell)"))
    return problems


def machine_identity(tree: FileTree) -> list[str]:
    """Paths of files that would make every machine booted from the image the same one.
    An empty /etc/machine-id is a placeholder, not an identity."""
    found = []
    for path, entry in sorted(tree.entries.items()):
        if entry.type != EntryType.FILE:
            continue
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in MACHINE_IDENTITY):
            if path.endswith("machine-id") and entry.size == 0:
                continue
            found.append("/" + path)
    return found


def _table(tree: FileTree, path: str) -> list[list[str]]:
    entry = tree.get(path)
    if entry is None or entry.blob is None:
        return []
    text = entry.blob.read().decode("utf-8", "surrogateescape")
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]
