"""The overlay onto a tree: host modes normalised, system folders kept, host paths confined."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from composer.errors import ProfileError
from composer.overlay import apply_overlay
from composer.profile.model import Overlay
from composer.tree import EntryType, FileTree


def system_tree() -> FileTree:
    tree = FileTree()
    tree.add_dir("etc", mode=0o755)
    tree.add_dir("usr", mode=0o755)
    tree.add_dir("usr/local", mode=0o755)
    tree.add_dir("var/empty", mode=0o555, uid=0, gid=0)
    tree.add_dir("home/app", mode=0o700, uid=1000, gid=1000)
    return tree


def make_checkout(folder: Path, umask: int) -> None:
    """Files as git would check them out under ``umask``."""
    old = os.umask(umask)
    try:
        for rel, executable in (("etc/app.conf", False), ("usr/local/bin/tool", True),
                                ("var/empty/x", False), ("home/app/.profile", False),
                                ("opt/new/data", False)):
            path = folder / "tree" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(rel)
            os.chmod(path, (0o777 if executable else 0o666) & ~umask)
        for directory in (folder / "tree").rglob("*"):
            if directory.is_dir():
                os.chmod(directory, 0o777 & ~umask)
    finally:
        os.umask(old)


def modes(tree: FileTree) -> dict[str, tuple[int, int, int]]:
    return {e.path: (e.mode, e.uid, e.gid) for e in tree.walk()}


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
def test_tree_modes_do_not_depend_on_the_umask(tmp_path: Path, umask: int) -> None:
    make_checkout(tmp_path / str(umask), umask)
    with system_tree() as tree:
        apply_overlay(tree, Overlay(tree=["tree"]), base_dir=tmp_path / str(umask))
        got = modes(tree)
    assert got == {
        "": (0o755, 0, 0), "etc": (0o755, 0, 0), "etc/app.conf": (0o644, 0, 0),
        "home": (0o755, 0, 0), "home/app": (0o700, 1000, 1000), "home/app/.profile": (0o644, 0, 0),
        "opt": (0o755, 0, 0), "opt/new": (0o755, 0, 0), "opt/new/data": (0o644, 0, 0),
        "usr": (0o755, 0, 0), "usr/local": (0o755, 0, 0), "usr/local/bin": (0o755, 0, 0),
        "usr/local/bin/tool": (0o755, 0, 0),
        "var": (0o755, 0, 0), "var/empty": (0o555, 0, 0), "var/empty/x": (0o644, 0, 0),
    }


def test_sources_outside_the_profile_folder_are_refused(tmp_path: Path) -> None:
    profile_dir = tmp_path / "profile"
    profile_dir.mkdir()
    (tmp_path / "secret").write_text("root:x:0:0")
    (profile_dir / "link").symlink_to(tmp_path / "secret")
    (profile_dir / "ok.conf").write_text("fine")
    roots = [profile_dir]
    for source in ("/etc/passwd", "../secret", "link"):
        overlay = Overlay(files=[{"path": "/etc/x", "source": source}])  # type: ignore[list-item]
        with FileTree() as tree, pytest.raises(ProfileError) as caught:
            apply_overlay(tree, overlay, base_dir=profile_dir, allowed_roots=roots)
        assert str(caught.value).startswith(
            f"overlay.files /etc/x: source: {source} leads outside the profile's folder")
        assert "--allow-host-paths" in str(caught.value)
    outside_tree = Overlay(tree=["../"])
    with FileTree() as tree, pytest.raises(ProfileError, match="overlay.tree: ../ leads outside"):
        apply_overlay(tree, outside_tree, base_dir=profile_dir, allowed_roots=roots)
    with FileTree() as tree:
        apply_overlay(tree, Overlay(files=[{"path": "/etc/x", "source": "ok.conf"}]),  # type: ignore[list-item]
                      base_dir=profile_dir, allowed_roots=roots)
        assert tree.read_file("etc/x") == b"fine"
        apply_overlay(tree, Overlay(files=[{"path": "/etc/y", "source": "link"}]),  # type: ignore[list-item]
                      base_dir=profile_dir, allowed_roots=None)
        assert tree.read_file("etc/y") == b"root:x:0:0"
        assert tree.get("etc/y").type == EntryType.FILE  # type: ignore[union-attr]


ACCOUNT_FILES = ("etc/passwd", "etc/shadow", "etc/group", "etc/gshadow")
ACCOUNTS_HINT = ("the image's accounts (system ones and those of accounts:); declare users, "
                 "groups, passwords and SSH keys under accounts: instead")


@pytest.mark.parametrize("name", ACCOUNT_FILES)
def test_an_overlay_may_not_replace_an_account_file(tmp_path: Path, name: str) -> None:
    """A whole /etc/shadow from the overlay would drop the system accounts and the profile's
    passwords; every way an overlay writes or removes a file is refused, naming it."""
    (tmp_path / "tree" / "etc").mkdir(parents=True)
    (tmp_path / "tree" / name).write_text("root::0:0::/root:/bin/sh\n")
    cases = [
        ({"files": [{"path": f"/{name}", "content": "x"}]}, f"overlay.files /{name}", name),
        ({"symlinks": [{"path": f"/{name}", "target": "/tmp/x"}]},
         f"overlay.symlinks /{name}", name),
        ({"remove": [f"/{name}"]}, "overlay.remove", name),
        ({"remove": ["/etc"]}, "overlay.remove", "etc/passwd"),
        ({"tree": ["tree"]}, f"overlay.tree tree/{name}", name),
    ]
    for fields, what, hit in cases:
        tree = system_tree()
        for path in ACCOUNT_FILES:
            tree.add_file(path, b"root:x:0:\n")
        before = tree.read_file(name)
        with pytest.raises(ProfileError) as info:
            apply_overlay(tree, Overlay.model_validate(fields), base_dir=tmp_path)
        written = "/etc" if fields.get("remove") == ["/etc"] else f"/{name}"
        assert str(info.value) == (f"{what}: {written} would replace or remove /{hit}, "
                                   f"{ACCOUNTS_HINT}"), fields
        assert tree.read_file(name) == before


def test_other_files_of_etc_are_fine(tmp_path: Path) -> None:
    tree = system_tree()
    apply_overlay(tree, Overlay.model_validate(
        {"files": [{"path": "/etc/passwd-", "content": "backup"},
                   {"path": "/etc/shadow.d/x", "content": "y"}]}), base_dir=tmp_path)
    assert tree.read_file("etc/passwd-") == b"backup"
