"""Running a Debian tool from a test: skip with the package to install when it is absent."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest


def run_tool(tool: str, package: str, *args: str,
             check: bool = True) -> subprocess.CompletedProcess[str]:
    """``tool ARGS`` with text output; with ``check``, a non-zero exit fails the test."""
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (apt-get install {package})")
    result = subprocess.run([tool, *args], capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def extract_trusted(archive: tarfile.TarFile, dest: Path, *, filter: str,
                    members: Sequence[tarfile.TarInfo] | None = None) -> None:
    """Unpack a fixture archive through tarfile's extraction ``filter`` where this Python
    has filters (3.11.4 and later); Debian 12's 3.11.2 predates them and unpacks as tar does."""
    if hasattr(tarfile, "data_filter"):
        archive.extractall(dest, members=members, filter=filter)
    else:
        archive.extractall(dest, members=members)
