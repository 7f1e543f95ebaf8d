"""The profile's ``accounts:`` and ``services:`` applied to a tree."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from composer.errors import InstallError
from composer.profile.model import Accounts
from composer.system.accounts import AccountFiles, GroupSpec, UserSpec, apply_accounts
from composer.system.services import enable_service
from composer.tree import FileTree


def configure_system(tree: FileTree, accounts: Accounts, services: Mapping[Any, Sequence[str]], *,
                     epoch: int, where: str) -> list[str]:
    """Add the accounts, then the OpenRC runlevel links; returns one line per change.

    ``where`` (the profile file) prefixes account errors.
    """
    done: list[str] = []
    if accounts.groups or accounts.users:
        # Profile accounts are ordinary ones: ids from 1000, a user-private group by default,
        # as busybox adduser does without -S.
        groups = [GroupSpec(name=g.name, gid=g.gid, system=False) for g in accounts.groups]
        users = [UserSpec(name=u.name, uid=u.uid, group=u.group, home=u.home, shell=u.shell,
                          gecos=u.gecos, system=False) for u in accounts.users]
        try:
            done.extend(apply_accounts(tree, groups, users, epoch=epoch))
            files = AccountFiles(tree, epoch=epoch)
            for user in accounts.users:
                for group in user.groups:
                    if files.group(group) is None:
                        raise InstallError(f"user {user.name} lists group {group!r}, "
                                           "which does not exist")
                    if files.add_member(user.name, group):
                        done.append(f"user {user.name} added to group {group}")
            files.save(mtime=epoch)
        except InstallError as exc:
            raise InstallError(f"{where}: accounts: {exc}") from None
    for runlevel, names in sorted(services.items()):
        for name in names:
            link = enable_service(tree, name, runlevel, mtime=epoch)
            done.append(f"service {name} enabled in {runlevel} (/{link})")
    return done
