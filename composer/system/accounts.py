"""Users and groups in a :class:`FileTree`, with busybox ``adduser``/``addgroup`` semantics.

Package scripts are never run, so their account changes are replayed here,
following busybox 1.36 ``loginutils/adduser.c`` and ``addgroup.c``:

* ``addgroup -S NAME`` takes the lowest gid not in ``etc/group`` from 100..999,
  ``addgroup NAME`` from 1000 up; ``-g GID`` must be free. New line ``NAME:x:GID:``,
  plus ``NAME:!::`` in ``etc/gshadow`` when that file exists.
* ``addgroup USER GROUP`` appends USER to GROUP's member list (no-op if present).
* ``adduser -S`` picks the lowest uid not in ``etc/passwd`` from 100..999
  (non-system: from 1000); without ``-G`` a system user's group is ``nogroup``,
  a normal user's group is a new one named like the user with gid = uid (the
  uid search then also skips uids that are taken as gids). Shell defaults to
  ``/bin/false`` for ``-S``, else root's shell. GECOS defaults to
  ``Linux User,,,``, home to ``/home/NAME``. ``etc/shadow`` gets
  ``NAME:!:DAYS:0:99999:7:::`` where DAYS comes from the build epoch (busybox
  uses the clock), then the user is added as a member of its group. Without
  ``-H`` the home is created 02755 owned by the user (skeleton copied from
  ``etc/skel``), or an existing one is chowned and set 02755.

Errors that busybox would print (name in use, unknown group) become
:class:`AccountError`; script emulation reports them instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass

from composer.errors import InstallError
from composer.numbers import parse_decimal
from composer.tree import Entry, EntryType, FileTree

FIRST_SYSTEM_ID = 100
LAST_SYSTEM_ID = 999
LAST_ID = 60000
LAST_USER_ID = 64999


class AccountError(InstallError):
    """An account change that busybox itself would refuse."""


@dataclass(frozen=True)
class GroupSpec:
    """A group a profile asks for; ``gid=None`` means "allocate like ``addgroup -S``"."""

    name: str
    gid: int | None = None
    members: tuple[str, ...] = ()
    system: bool = True


@dataclass(frozen=True)
class UserSpec:
    """A user a profile asks for, mirroring ``adduser`` options."""

    name: str
    uid: int | None = None
    group: str | None = None
    home: str | None = None
    shell: str | None = None
    gecos: str | None = None
    system: bool = True
    create_home: bool = False


class AccountFiles:
    """``etc/passwd``, ``etc/group``, ``etc/shadow``, ``etc/gshadow`` of a tree, edited as lines."""

    FILES = ("etc/passwd", "etc/group", "etc/shadow", "etc/gshadow")

    def __init__(self, tree: FileTree, *, epoch: int) -> None:
        self.tree = tree
        self.epoch = epoch
        self.lines: dict[str, list[str] | None] = {}
        self.changed: set[str] = set()
        for path in self.FILES:
            entry = tree.get(path)
            if entry is not None and entry.type == EntryType.FILE and entry.blob is not None:
                self.lines[path] = entry.blob.read().decode("utf-8", "surrogateescape").splitlines()
            else:
                self.lines[path] = None

    # -- lookups
    def _rows(self, path: str) -> list[list[str]]:
        return [line.split(":") for line in self.lines[path] or [] if line]

    def group(self, name: str) -> list[str] | None:
        return next((r for r in self._rows("etc/group") if r[0] == name), None)

    def gid_taken(self, gid: int) -> bool:
        return any(len(r) > 2 and r[2] == str(gid) for r in self._rows("etc/group"))

    def user(self, name: str) -> list[str] | None:
        return next((r for r in self._rows("etc/passwd") if r[0] == name), None)

    def owner_of_id(self, path: str, number: int) -> str | None:
        """The name of the account (``etc/passwd``) or group (``etc/group``) holding an id."""
        for row in self._rows(path):
            if len(row) > 2 and row[2] == str(number):
                return row[0]
        return None

    def uid_taken(self, uid: int) -> bool:
        return any(len(r) > 2 and r[2] == str(uid) for r in self._rows("etc/passwd"))

    # -- edits
    def _require(self, path: str) -> list[str]:
        lines = self.lines[path]
        if lines is None:
            raise AccountError(f"{path} does not exist in the tree")
        return lines

    def _append(self, path: str, line: str) -> None:
        self._require(path).append(line)
        self.changed.add(path)

    def add_group(self, name: str, *, gid: int | None = None, system: bool = True) -> int:
        """``addgroup [-S] [-g GID] NAME``; returns the gid."""
        self._require("etc/group")
        if self.group(name) is not None:
            raise AccountError(f"group '{name}' in use")
        if gid is not None:
            if self.gid_taken(gid):
                owner = self.owner_of_id("etc/group", gid)
                raise AccountError(f"gid '{gid}' in use" + (f" by group {owner}" if owner else ""))
        else:
            gid, last = (FIRST_SYSTEM_ID, LAST_SYSTEM_ID) if system else (LAST_SYSTEM_ID + 1, LAST_ID)
            while self.gid_taken(gid):
                if gid == last:
                    raise AccountError("no gids left")
                gid += 1
        self._append("etc/group", f"{name}:x:{gid}:")
        if self.lines["etc/gshadow"] is not None:
            self._append("etc/gshadow", f"{name}:!::")
        return gid

    def add_member(self, user: str, group: str) -> bool:
        """``addgroup USER GROUP``; False when USER already was a member."""
        if self.user(user) is None:
            raise AccountError(f"unknown user {user}")
        row = self.group(group)
        if row is None:
            raise AccountError(f"unknown group {group}")
        if user in (row[3].split(",") if len(row) > 3 and row[3] else []):
            return False
        for path in ("etc/group", "etc/gshadow"):
            lines = self.lines[path]
            if lines is None:
                continue
            for i, line in enumerate(lines):
                if line.split(":", 1)[0] == group:
                    lines[i] = line + ("" if line.endswith(":") else ",") + user
                    self.changed.add(path)
                    break
        return True

    def add_user(self, spec: UserSpec) -> tuple[int, int]:
        """``adduser`` with busybox defaults; returns (uid, gid)."""
        self._require("etc/passwd")
        if self.user(spec.name) is not None:
            raise AccountError(f"user '{spec.name}' in use")
        group = spec.group or ("nogroup" if spec.system else None)
        gid: int | None = None
        if group is not None:
            row = self.group(group)
            if row is None:
                raise AccountError(f"unknown group {group}")
            gid = parse_decimal(row[2])
            if gid is None:
                raise AccountError(f"group {group} has no numeric gid in etc/group")
        shell = spec.shell or ("/bin/false" if spec.system else self._root_shell())
        uid, last = ((spec.uid, LAST_ID) if spec.uid is not None else
                     (FIRST_SYSTEM_ID, LAST_SYSTEM_ID) if spec.system else
                     (LAST_SYSTEM_ID + 1, LAST_USER_ID))
        while self.uid_taken(uid) or (gid is None and self.gid_taken(uid)):
            if spec.uid is not None:
                owner = self.owner_of_id("etc/passwd", uid)
                raise AccountError(f"uid '{uid}' in use" + (f" by user {owner}" if owner else ""))
            if uid == last:
                raise AccountError("no uids left")
            uid += 1
        if gid is None:
            if self.group(spec.name) is not None:
                raise AccountError(f"group '{spec.name}' in use")
            gid = uid
        home = spec.home or f"/home/{spec.name}"
        gecos = spec.gecos if spec.gecos is not None else "Linux User,,,"
        self._append("etc/passwd", f"{spec.name}:x:{uid}:{gid}:{gecos}:{home}:{shell}")
        if self.lines["etc/shadow"] is not None:
            self._append("etc/shadow", f"{spec.name}:!:{self.epoch // 86400}:0:99999:7:::")
        if group is not None:
            self.add_member(spec.name, group)
        else:
            self.add_group(spec.name, gid=gid)
        if spec.create_home:
            self._make_home(home.lstrip("/"), uid, gid)
        return uid, gid

    def _root_shell(self) -> str:
        row = self.user("root")
        return row[6] if row is not None and len(row) > 6 and row[6] else "/bin/sh"

    def _make_home(self, home: str, uid: int, gid: int) -> None:
        existing = self.tree.get(home)
        if existing is None:
            parent = home.rpartition("/")[0]
            parent_entry = self.tree.get(parent)
            if parent_entry is None or parent_entry.type != EntryType.DIR:
                raise AccountError(f"cannot create home /{home}: /{parent} is not a directory")
            self.tree.put(Entry(path=home, type=EntryType.DIR, mode=0o2755, uid=uid, gid=gid,
                                mtime=self.epoch))
            self._copy_skel(home, uid, gid)
        elif existing.type == EntryType.DIR:
            self.tree.put(existing.with_changes(uid=uid, gid=gid, mode=0o2755))
        else:
            raise AccountError(f"home /{home} exists and is not a directory")

    def _copy_skel(self, home: str, uid: int, gid: int) -> None:
        skel = self.tree.get("etc/skel")
        if skel is None or skel.type != EntryType.DIR:
            return
        for path in sorted(self.tree.children("etc/skel")):
            entry = self.tree.entries[path]
            self.tree.put(entry.with_changes(path=home + path[len("etc/skel"):], uid=uid, gid=gid,
                                             link_id=0))

    def password_field(self, name: str) -> str | None:
        """The second field of ``name``'s line in ``etc/shadow`` (None: no line, no file)."""
        row = next((r for r in self._rows("etc/shadow") if r[0] == name), None)
        return row[1] if row is not None and len(row) > 1 else None

    def set_password(self, name: str, value: str) -> None:
        """Put ``value`` (a crypt hash, ``*`` locked, or empty) into ``name``'s shadow line;
        a user of ``etc/passwd`` without one gets a line as ``adduser`` writes it."""
        if self.user(name) is None:
            raise AccountError(f"unknown user {name}")
        lines = self._require("etc/shadow")
        for i, line in enumerate(lines):
            fields = line.split(":")
            if fields[0] == name:
                fields += [""] * (2 - len(fields))
                fields[1] = value
                lines[i] = ":".join(fields)
                break
        else:
            lines.append(f"{name}:{value}:{self.epoch // 86400}:0:99999:7:::")
        self.changed.add("etc/shadow")

    def passwd_row(self, name: str) -> list[str]:
        """``name``'s ``etc/passwd`` fields (seven of them, missing ones empty)."""
        row = self.user(name)
        if row is None:
            raise AccountError(f"unknown user {name}")
        return row + [""] * (7 - len(row))

    def save(self, *, mtime: int) -> list[str]:
        """Write changed files back (keeping owner and mode); return their paths."""
        written = []
        for path in self.FILES:
            if path not in self.changed:
                continue
            lines = self.lines[path]
            assert lines is not None
            old = self.tree.entries[path]
            data = ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
            self.tree.put(old.with_changes(blob=self.tree.store.from_bytes(data), mtime=mtime,
                                           link_id=0))
            written.append(path)
        self.changed.clear()
        return written


def apply_accounts(tree: FileTree, groups: list[GroupSpec], users: list[UserSpec], *,
                   epoch: int) -> list[str]:
    """Create profile-declared groups then users; a name that exists with other ids is an error.

    Returns one line per change, for the build manifest.
    """
    files = AccountFiles(tree, epoch=epoch)
    done: list[str] = []
    for g in groups:
        row = files.group(g.name)
        if row is None:
            gid = files.add_group(g.name, gid=g.gid, system=g.system)
            done.append(f"group {g.name} gid {gid}")
        elif g.gid is not None and row[2] != str(g.gid):
            raise AccountError(f"group {g.name} already exists with gid {row[2]}, not {g.gid}")
    for u in users:
        row = files.user(u.name)
        if row is None:
            uid, gid = files.add_user(u)
            done.append(f"user {u.name} uid {uid} gid {gid}")
        elif u.uid is not None and row[2] != str(u.uid):
            raise AccountError(f"user {u.name} already exists with uid {row[2]}, not {u.uid}")
    for g in groups:
        for member in g.members:
            if files.add_member(member, g.name):
                done.append(f"group {g.name} member {member}")
    files.save(mtime=epoch)
    return done
