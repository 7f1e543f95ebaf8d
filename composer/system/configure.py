"""The profile's ``accounts:`` and ``services:`` applied to a tree.

Accounts are added before the overlay (so overlay files can be owned by them), services
after it (so an init script the overlay ships can be enabled).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from composer.errors import InstallError, ProfileError
from composer.profile.model import Accounts, Login
from composer.system.accounts import AccountFiles, GroupSpec, UserSpec, apply_accounts
from composer.system.logins import (
    lock_empty_passwords,
    remote_terminals,
    sshd_allows_empty_passwords,
    write_authorized_keys,
    write_securetty,
)
from composer.system.services import enable_service
from composer.tree import FileTree


def configure_accounts(tree: FileTree, accounts: Accounts, *, epoch: int, where: str) -> list[str]:
    """Add the profile's groups and users (homes made as ``adduser`` makes them); returns one
    line per change. A mistake in them is the profile's: ProfileError, prefixed by ``where``."""
    done: list[str] = []
    if not (accounts.groups or accounts.users):
        return done + configure_logins(tree, accounts, epoch=epoch, where=where)
    # Profile accounts are ordinary ones: ids from 1000, a user-private group by default,
    # as busybox adduser does without -S.
    groups = [GroupSpec(name=g.name, gid=g.gid, system=False) for g in accounts.groups]
    users = [UserSpec(name=u.name, uid=u.uid, group=u.group, home=u.home, shell=u.shell,
                      gecos=u.gecos, system=False, create_home=u.create_home)
             for u in accounts.users]
    try:
        for user in users:
            if user.create_home:
                home = (user.home or f"/home/{user.name}").strip("/")
                tree.ensure_parents(home, mtime=epoch)
        done.extend(apply_accounts(tree, groups, users, epoch=epoch))
        files = AccountFiles(tree, epoch=epoch)
        for profile_user in accounts.users:
            for group in profile_user.groups:
                if files.group(group) is None:
                    raise InstallError(f"user {profile_user.name} lists group {group!r}, "
                                       "which does not exist")
                if files.add_member(profile_user.name, group):
                    done.append(f"user {profile_user.name} added to group {group}")
        files.save(mtime=epoch)
    except InstallError as exc:
        raise ProfileError(f"{where}: accounts: {exc}") from None
    return done + configure_logins(tree, accounts, epoch=epoch, where=where)


def configure_logins(tree: FileTree, accounts: Accounts, *, epoch: int, where: str) -> list[str]:
    """Passwords and SSH keys of root and the profile's users; empty passwords locked unless
    the profile opts into Alpine's passwordless root console. One line per change."""
    files = AccountFiles(tree, epoch=epoch)
    if files.lines["etc/passwd"] is None or files.lines["etc/shadow"] is None:
        if _asks_for_logins(accounts):
            raise ProfileError(f"{where}: accounts: the image has no /etc/passwd and "
                               "/etc/shadow to set passwords in (add alpine-baselayout)")
        return []
    root = accounts.root
    logins: list[tuple[str, str, Login]] = [("accounts.root", "root", root)]
    logins += [(f"accounts.users[{i}]", u.name, u) for i, u in enumerate(accounts.users)]
    done: list[str] = []
    for field, name, login in logins:
        try:
            if login.password is not None:
                files.set_password(name, login.password)
                done.append(f"{name}: password set")
            if login.ssh_authorized_keys:
                path = write_authorized_keys(tree, files, name, login.ssh_authorized_keys,
                                             mtime=epoch)
                done.append(f"{name}: {len(login.ssh_authorized_keys)} SSH key(s) in {path}")
        except InstallError as exc:
            raise ProfileError(f"{where}: {field}: {exc}") from None
    if root.console_login_without_password:
        files.set_password("root", "")
        if write_securetty(tree, mtime=epoch):
            done.append("/etc/securetty: the local consoles")
        done.append("root: no password, on the consoles of /etc/securetty only")
    done += [f"{name}: empty password locked (*)"
             for name in lock_empty_passwords(files, keep_root_empty=root.console_login_without_password)]
    files.save(mtime=epoch)
    return done


def _asks_for_logins(accounts: Accounts) -> bool:
    return any(login.password is not None or login.ssh_authorized_keys
               for login in [accounts.root, *accounts.users]) \
        or accounts.root.console_login_without_password


def enable_services(tree: FileTree, services: Mapping[Any, Sequence[str]], *, epoch: int,
                    where: str) -> list[str]:
    """The OpenRC runlevel links; a service without an init script is the profile's mistake."""
    done: list[str] = []
    for runlevel, names in sorted(services.items()):
        for name in names:
            try:
                link = enable_service(tree, name, runlevel, mtime=epoch)
            except InstallError as exc:
                raise ProfileError(f"{where}: services: {exc}") from None
            done.append(f"service {name} enabled in {runlevel} (/{link})")
    return done


def check_logins(tree: FileTree, accounts: Accounts, *, where: str) -> None:
    """What the finished tree (overlay included) must not undo: SSH never takes root's
    empty password."""
    if not accounts.root.console_login_without_password:
        return
    remote = remote_terminals(tree)
    if remote:
        raise ProfileError(f"{where}: accounts.root.console_login_without_password: /etc/securetty "
                           f"lets root in on {', '.join(remote)}, so a remote login would take "
                           "the empty password; list local consoles only")
    config = sshd_allows_empty_passwords(tree)
    if config is not None:
        raise ProfileError(f"{where}: accounts.root.console_login_without_password: {config} says "
                           "PermitEmptyPasswords yes, so SSH would let root in without a password; "
                           "remove that line")
