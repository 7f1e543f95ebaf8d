"""OpenRC services: runlevel links as ``rc-update add`` makes them."""

from __future__ import annotations

import re

from composer.errors import InstallError
from composer.system.paths import make_dirs
from composer.tree import Entry, EntryType, FileTree


def enable_service(tree: FileTree, name: str, runlevel: str = "default", *,
                   mtime: int = 0) -> str:
    """``rc-update add NAME RUNLEVEL``: link ``etc/runlevels/<runlevel>/<name>``."""
    script = tree.get(f"etc/init.d/{name}")
    if script is None:
        raise InstallError(f"cannot enable service {name!r}: /etc/init.d/{name} does not exist")
    if not re.fullmatch(r"[A-Za-z0-9_.@-]+", runlevel) or not re.fullmatch(r"[A-Za-z0-9_.@-]+", name):
        raise InstallError(f"cannot enable service {name!r} in runlevel {runlevel!r}: bad name")
    make_dirs(tree, f"etc/runlevels/{runlevel}", mtime)
    link = f"etc/runlevels/{runlevel}/{name}"
    tree.put(Entry(path=link, type=EntryType.SYMLINK, mode=0o777, mtime=mtime,
                   target=f"/etc/init.d/{name}"))
    return link
