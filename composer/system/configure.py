"""The profile's ``accounts:`` and ``services:`` applied to a tree.

Accounts are added before the overlay (so overlay files can be owned by them), services
after it (so an init script the overlay ships can be enabled).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from composer.errors import InstallError, ProfileError
from composer.profile.model import Accounts
from composer.system.accounts import AccountFiles, GroupSpec, UserSpec, apply_accounts
from composer.system.services import enable_service
from composer.tree import FileTree


def configure_accounts(tree: FileTree, accounts: Accounts, *, epoch: int, where: str) -> list[str]:
    """Add the profile's groups and users (homes made as ``adduser`` makes them); returns one
    line per change. A mistake in them is the profile's: ProfileError, prefixed by ``where``."""
    done: list[str] = []
    if not (accounts.groups or accounts.users):
        return done
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
    return done


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
