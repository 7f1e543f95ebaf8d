"""Ways into a booted image: shadow password fields, ``authorized_keys``, ``/etc/securetty``.

Rules the image keeps whatever the profile says:

* No account has an empty password field unless the profile opts in for root
  (``accounts.root.console_login_without_password``, Alpine's ISO behaviour). Alpine's
  ``alpine-baselayout-data`` ships ``root::`` (empty); an image built from packages
  would otherwise let anyone log in as root on every terminal. Locked is ``*``, as in
  Alpine's minirootfs.
* With that opt-in, ``/etc/securetty`` lists the local consoles only, so busybox
  ``login`` lets root in there and nowhere else, and the image's sshd must not say
  ``PermitEmptyPasswords yes`` (OpenSSH's default is no, and it never consults
  securetty): SSH never accepts the empty password.
"""

from __future__ import annotations

from collections.abc import Sequence

from composer.system.accounts import AccountError, AccountFiles
from composer.system.paths import resolve_dir
from composer.tree import Entry, EntryType, FileTree

LOCKED = "*"
CONSOLES = ("console", "tty1", "tty2", "tty3", "tty4", "tty5", "tty6", "ttyS0", "ttyS1",
            "ttyAMA0", "hvc0", "ttysclp0", "xvc0")
"""Local consoles: the screen's virtual terminals and the serial ports Linux names on PCs,
Arm boards, virtio and s390 — never a pseudo-terminal (``pts/N``: telnet, SSH)."""
SECURETTY = "etc/securetty"
SSHD_CONFIGS = ("etc/ssh/sshd_config",)
SSHD_CONFIG_DIR = "etc/ssh/sshd_config.d"


def lock_empty_passwords(files: AccountFiles, *, keep_root_empty: bool) -> list[str]:
    """Replace every empty shadow password field with ``*``; returns the accounts changed."""
    locked = []
    for line in list(files.lines["etc/shadow"] or []):
        fields = line.split(":")
        if len(fields) > 1 and fields[0] and fields[1] == "":
            if fields[0] == "root" and keep_root_empty:
                continue
            files.set_password(fields[0], LOCKED)
            locked.append(fields[0])
    return locked


def write_authorized_keys(tree: FileTree, files: AccountFiles, name: str,
                          keys: Sequence[str], *, mtime: int) -> str:
    """``~name/.ssh/authorized_keys`` with ``keys`` (folder 0700, file 0600, owned by the
    account, as sshd's StrictModes wants them); returns the file's path."""
    row = files.passwd_row(name)
    uid, gid, home = int(row[2]), int(row[3]), row[5]
    home_dir = resolve_dir(tree, home.strip("/"))
    if home_dir is None:
        hint = "add alpine-baselayout" if name == "root" else "keep create_home: true"
        raise AccountError(f"user {name}: home {home or '(none)'} is not a folder in the image, "
                           f"so there is no place for ~/.ssh/authorized_keys ({hint})")
    ssh_dir = f"{home_dir}/.ssh" if home_dir else ".ssh"
    existing = tree.get(ssh_dir)
    if existing is not None and existing.type != EntryType.DIR:
        raise AccountError(f"user {name}: /{ssh_dir} is a {existing.type.value}, not a folder")
    tree.put(Entry(path=ssh_dir, type=EntryType.DIR, mode=0o700, uid=uid, gid=gid, mtime=mtime))
    data = "".join(f"{key}\n" for key in keys).encode()
    path = f"{ssh_dir}/authorized_keys"
    tree.put(Entry(path=path, type=EntryType.FILE, mode=0o600, uid=uid, gid=gid, mtime=mtime,
                   blob=tree.store.from_bytes(data)))
    return "/" + path


def write_securetty(tree: FileTree, *, mtime: int) -> bool:
    """``/etc/securetty`` naming the local consoles, unless the image has one (Alpine's
    alpine-baselayout ships its own list of local consoles). busybox ``login`` lets root in
    everywhere when the file is missing. Returns whether it was written."""
    if tree.get(SECURETTY) is not None:
        return False
    data = "".join(f"{tty}\n" for tty in CONSOLES).encode()
    tree.put(Entry(path=SECURETTY, type=EntryType.FILE, mode=0o644, mtime=mtime,
                   blob=tree.store.from_bytes(data)))
    return True


def remote_terminals(tree: FileTree) -> list[str]:
    """The pseudo-terminals (``pts/N``, where telnet and SSH sessions log in) that
    ``/etc/securetty`` lets root log into; a missing file lets root in everywhere."""
    entry = tree.get(SECURETTY)
    if entry is None or entry.blob is None:
        return ["every terminal (no /etc/securetty)"]
    names = [line.split("#", 1)[0].strip()
             for line in entry.blob.read().decode("utf-8", "replace").splitlines()]
    return [name for name in names if name.startswith(("pts", "/dev/pts"))]


def sshd_allows_empty_passwords(tree: FileTree) -> str | None:
    """The sshd configuration file that turns ``PermitEmptyPasswords`` on, if one does.
    sshd takes the first value it reads, and Alpine's sshd_config includes
    sshd_config.d/*.conf at its top, so every file is checked."""
    included = sorted(p for p in tree.children(SSHD_CONFIG_DIR)
                      if p.endswith(".conf") and p.count("/") == SSHD_CONFIG_DIR.count("/") + 1)
    paths = [*SSHD_CONFIGS, *included]
    for path in paths:
        entry = tree.get(path)
        if entry is None or entry.blob is None:
            continue
        for line in entry.blob.read().decode("utf-8", "replace").splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) >= 2 and words[0].lower() == "permitemptypasswords" \
                    and words[1].lower() == "yes":
                return "/" + path
    return None
