"""Leftovers of builds that died (SIGKILL, power loss): staging folders and partial downloads.

Each is named with the PID of the process that made it, so a later build can tell a dead
build's leftovers from a live build's work in progress and remove only the former.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path


def pid_tag() -> str:
    """The part of a temporary name that says which process owns it."""
    return f"pid{os.getpid()}-"


def process_alive(pid: int) -> bool:
    """True when ``pid`` is a running process (or one we may not signal: assume alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_dead(folder: Path, prefix: str) -> list[Path]:
    """Remove entries of ``folder`` named ``<prefix>pid<N>-…`` whose process N is gone."""
    pattern = re.compile(re.escape(prefix) + r"pid(\d+)-")
    removed: list[Path] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in sorted(names):
        match = pattern.match(name)
        if match is None or process_alive(int(match.group(1))):
            continue
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        removed.append(path)
    return removed
