"""OS configuration: profile accounts and OpenRC service links in a tree."""

from __future__ import annotations

import pytest

from composer.errors import InstallError
from composer.system.accounts import AccountError, GroupSpec, UserSpec, apply_accounts
from composer.system.services import enable_service
from composer.tree import FileTree
from tests.apk.test_effects import EPOCH, _accounts_tree


def test_profile_accounts() -> None:
    tree = _accounts_tree()
    done = apply_accounts(tree, [GroupSpec("app", gid=2000, members=("root",))],
                          [UserSpec("app", uid=2000, group="app", home="/srv/app",
                                    shell="/sbin/nologin", gecos="")], epoch=EPOCH)
    assert done == ["group app gid 2000", "user app uid 2000 gid 2000", "group app member root"]
    assert tree.read_file("etc/group").decode().splitlines()[-1] == "app:x:2000:app,root"
    with pytest.raises(AccountError, match="^user app already exists with uid 2000, not 3$"):
        apply_accounts(tree, [], [UserSpec("app", uid=3)], epoch=EPOCH)


def test_enable_service() -> None:
    tree = FileTree()
    tree.add_file("etc/init.d/sshd", b"#!/sbin/openrc-run\n", mode=0o755)
    assert enable_service(tree, "sshd", "default") == "etc/runlevels/default/sshd"
    assert tree.entries["etc/runlevels/default/sshd"].target == "/etc/init.d/sshd"
    with pytest.raises(InstallError) as info:
        enable_service(tree, "nginx", "default")
    assert str(info.value) == "cannot enable service 'nginx': /etc/init.d/nginx does not exist"
