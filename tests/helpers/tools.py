"""Running a Debian tool from a test: skip with the package to install when it is absent."""

from __future__ import annotations

import shutil
import subprocess

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
