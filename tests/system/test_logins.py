"""Ways into an image (issue 14 item 1) on a tree shaped like Alpine's packages leave it:
alpine-baselayout-data's ``root::`` and no /etc/securetty."""

from __future__ import annotations

import pytest

from composer.errors import ProfileError
from composer.profile.model import Accounts
from composer.system.configure import configure_accounts
from composer.tree import FileTree

EPOCH = 1725622440
HASH = "$6$salt$" + "b" * 86


def packages_tree(*, root_home: bool = True) -> FileTree:
    tree = FileTree()
    tree.add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
                                b"daemon:x:2:2:daemon:/sbin:/sbin/nologin\n")
    tree.add_file("etc/group", b"root:x:0:root\ndaemon:x:2:root,bin,daemon\n")
    tree.add_file("etc/shadow", b"root:::0:::::\ndaemon::::::::\n", mode=0o640)
    tree.add_file("bin/sh", b"#!", mode=0o755)
    if root_home:
        tree.add_dir("root", mode=0o700)
    return tree


def shadow(tree: FileTree) -> list[str]:
    return tree.read_file("etc/shadow").decode().splitlines()


def test_empty_password_fields_are_locked_by_default() -> None:
    tree = packages_tree()
    done = configure_accounts(tree, Accounts(), epoch=EPOCH, where="p.yaml")
    assert shadow(tree) == ["root:*::0:::::", "daemon:*:::::::"]
    assert done == ["root: empty password locked (*)", "daemon: empty password locked (*)"]
    assert tree.get("etc/securetty") is None


def test_console_opt_in_keeps_roots_empty_field_and_writes_securetty_when_absent() -> None:
    tree = packages_tree()
    done = configure_accounts(tree, Accounts.model_validate(
        {"root": {"console_login_without_password": True}}), epoch=EPOCH, where="p.yaml")
    assert shadow(tree) == ["root:::0:::::", "daemon:*:::::::"]
    assert tree.read_file("etc/securetty").decode().split() == [
        "console", "tty1", "tty2", "tty3", "tty4", "tty5", "tty6", "ttyS0", "ttyS1", "ttyAMA0",
        "hvc0", "ttysclp0", "xvc0"]
    assert done == ["/etc/securetty: the local consoles",
                    "root: no password, on the consoles of /etc/securetty only",
                    "daemon: empty password locked (*)"]


def test_root_password_and_key_on_a_tree_without_a_home_for_root() -> None:
    tree = packages_tree(root_home=False)
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINH/ctMd936be5Zj6SHJpcXzIiB6LfRxW/BLYt5mAAm6 r@t"
    with pytest.raises(ProfileError) as info:
        configure_accounts(tree, Accounts.model_validate(
            {"root": {"password": HASH, "ssh_authorized_keys": [key]}}), epoch=EPOCH,
            where="p.yaml")
    assert str(info.value) == (
        "p.yaml: accounts.root: user root: home /root is not a folder in the image, so there is "
        "no place for ~/.ssh/authorized_keys (add alpine-baselayout)")


def test_logins_need_the_account_files() -> None:
    with pytest.raises(ProfileError) as info:
        configure_accounts(FileTree(), Accounts.model_validate({"root": {"password": HASH}}),
                           epoch=EPOCH, where="p.yaml")
    assert str(info.value) == ("p.yaml: accounts: the image has no /etc/passwd and /etc/shadow "
                               "to set passwords in (add alpine-baselayout)")
    assert configure_accounts(FileTree(), Accounts(), epoch=EPOCH, where="p.yaml") == []
