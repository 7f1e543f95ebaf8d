"""Logging in to a built image (issue 14 item 1): password hashes in /etc/shadow, SSH keys
with the modes and owners sshd's StrictModes wants, root locked unless the profile opts
into Alpine's passwordless console; read back from the tar the build wrote.

Built in-process over the real 3.20.3 minirootfs (its /etc/shadow has ``root:*`` and the
system accounts; /root exists, 0700)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from composer.archive import load_tar
from composer.errors import ProfileError
from composer.stages.pipeline import build
from composer.tree import EntryType, FileTree
from tests.conftest import require_shared, write_profile
from tests.helpers.gpg import SigningKey
from tests.helpers.mirror import build_mirror
from tests.stages.conftest import ContextFor

USER_HASH = ("$6$composer2026$ZrPSCGLtdY21pBLSI7KMTZpKvRCgaSqXVfCakU8KOQ7DC8xhZqOjaaAXjbOZAxYc"
             "3tQjcLT/jkvBa8yocAHOo1")  # openssl passwd -6 -salt composer2026 secret
ROOT_HASH = ("$6$rounds=5000$rootsalt$" + "A" * 86)
USER_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOwLvXYb2bXglDw3Q0xHK3vMQBpqfpVz05PCtL1dgRlf "
            "ops@test")
ROOT_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINH/ctMd936be5Zj6SHJpcXzIiB6LfRxW/BLYt5mAAm6 "
            "root@test")


@pytest.fixture
def real_mirror_url(tmp_path: Path, signing_key: SigningKey) -> str:
    real = require_shared() / "minirootfs" / "alpine-minirootfs-3.20.3-x86_64.tar.gz"
    return build_mirror(tmp_path / "mirror", key=signing_key, tarball=real.read_bytes()).file_url


def built_tree(tmp_path: Path, url: str, key: SigningKey, context_for: ContextFor,
               **fields: Any) -> FileTree:
    profile = write_profile(tmp_path / "p", mirror_url=url, key=key, name="login",
                            outputs=[{"format": "tar", "compression": "none"}], **fields)
    result = build(context_for(profile))
    tree = FileTree()
    with (result.output_dir / "login-3.20.3-x86_64.tar").open("rb") as fh:
        load_tar(fh, tree, source="login.tar")
    return tree


def shadow(tree: FileTree) -> dict[str, str]:
    lines = tree.read_file("etc/shadow").decode().splitlines()
    return {line.split(":")[0]: line.split(":")[1] for line in lines}


def test_hashes_and_keys_land_in_the_built_tree(tmp_path: Path, real_mirror_url: str,
                                                signing_key: SigningKey,
                                                context_for: ContextFor) -> None:
    tree = built_tree(tmp_path, real_mirror_url, signing_key, context_for, accounts={
        "root": {"password": ROOT_HASH, "ssh_authorized_keys": [ROOT_KEY]},
        "users": [{"name": "ops", "uid": 1200, "password": USER_HASH,
                   "ssh_authorized_keys": [USER_KEY]}]})
    fields = shadow(tree)
    assert (fields["root"], fields["ops"]) == (ROOT_HASH, USER_HASH)
    assert fields["bin"] == "!"  # system accounts kept as the minirootfs has them
    ops_line = next(line for line in tree.read_file("etc/passwd").decode().splitlines()
                    if line.startswith("ops:"))
    uid, gid = (int(x) for x in ops_line.split(":")[2:4])
    assert (uid, gid) == (1200, 1200)
    for home, owner, key in (("home/ops", (uid, gid), USER_KEY), ("root", (0, 0), ROOT_KEY)):
        folder, keys = tree.get(f"{home}/.ssh"), tree.get(f"{home}/.ssh/authorized_keys")
        assert folder is not None and keys is not None
        assert (folder.type, folder.mode, folder.uid, folder.gid) == (EntryType.DIR, 0o700, *owner)
        assert (keys.type, keys.mode, keys.uid, keys.gid) == (EntryType.FILE, 0o600, *owner)
        assert tree.read_file(f"{home}/.ssh/authorized_keys") == f"{key}\n".encode()


def test_root_stays_locked_by_default_and_the_console_opt_in_empties_it(
        tmp_path: Path, real_mirror_url: str, signing_key: SigningKey,
        context_for: ContextFor) -> None:
    default = built_tree(tmp_path / "a", real_mirror_url, signing_key, context_for,
                         accounts={"users": [{"name": "ops"}]})
    assert (shadow(default)["root"], shadow(default)["ops"]) == ("*", "!")
    console = built_tree(tmp_path / "b", real_mirror_url, signing_key, context_for,
                         accounts={"root": {"console_login_without_password": True}})
    assert shadow(console)["root"] == ""
    # Alpine's own /etc/securetty (local consoles, no pts/N) is what busybox login checks.
    assert console.read_file("etc/securetty") == default.read_file("etc/securetty")
    assert {"console", "tty1", "ttyS0", "ttyAMA0", "hvc0"} <= set(
        console.read_file("etc/securetty").decode().split())


@pytest.mark.parametrize(("overlay", "message"), [
    ({"files": [{"path": "/etc/ssh/sshd_config.d/50-open.conf",
                 "content": "PermitEmptyPasswords yes\n"}]},
     "/etc/ssh/sshd_config.d/50-open.conf says PermitEmptyPasswords yes, so SSH would let root "
     "in without a password; remove that line"),
    ({"files": [{"path": "/etc/securetty", "content": "console\npts/0\n"}]},
     "/etc/securetty lets root in on pts/0, so a remote login would take the empty password; "
     "list local consoles only"),
    ({"remove": ["/etc/securetty"]},
     "/etc/securetty lets root in on every terminal (no /etc/securetty), so a remote login "
     "would take the empty password; list local consoles only"),
])
def test_the_empty_root_password_stays_on_the_console(
        tmp_path: Path, real_mirror_url: str, signing_key: SigningKey, context_for: ContextFor,
        overlay: dict[str, Any], message: str) -> None:
    with pytest.raises(ProfileError) as info:
        built_tree(tmp_path, real_mirror_url, signing_key, context_for,
                   accounts={"root": {"console_login_without_password": True}}, overlay=overlay)
    assert str(info.value) == (f"{tmp_path / 'p' / 'login.yaml'}: "
                               f"accounts.root.console_login_without_password: {message}")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
