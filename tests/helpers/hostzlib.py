"""Building the same profile twice, once with the host's zlib swapped for zlib-ng.

The second build runs :data:`SWAP_AND_RUN` in a fresh interpreter: Python's ``zlib`` module
is replaced by the zlib-ng binding presented under that name (as on a Fedora or RHEL 10
host) and ``lzma`` by a module that refuses to compress, before composer is imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import zlib_ng.zlib_ng as zlib_ng

from tests.conftest import REPO

# Runs in the child before composer is imported, so every module composer (and the standard
# library's gzip and tarfile) imports sees the replacements.
SWAP_AND_RUN = """
import sys
import types

import lzma
import zlib_ng.zlib_ng

sys.modules["zlib"] = zlib_ng.zlib_ng


def _refuse(*args, **kwargs):
    raise RuntimeError("the host's liblzma was asked to compress")


host_lzma = types.ModuleType("lzma")
host_lzma.__dict__.update({k: v for k, v in vars(lzma).items() if not k.startswith("__")})
host_lzma.LZMACompressor = _refuse
host_lzma.compress = _refuse
sys.modules["lzma"] = host_lzma

from composer.cli import main

raise SystemExit(main(sys.argv[1:]))
"""


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def build_with_both_zlibs(profile: Path, name: str, work: Path, *,
                          timeout: float) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The output folder ``name`` of two CLI builds of ``profile`` (each with its own cache):
    with the host's zlib, then with zlib-ng in its place. Skips where the host's zlib is
    zlib-ng already."""
    sample = bytes(range(256)) * 64 + b"composer " * 4096
    if zlib_ng.compress(sample, 6) == zlib.compress(sample, 6):
        pytest.skip("this host's zlib is zlib-ng already: nothing to swap it for")
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    env["PYTHONPATH"] = os.fspath(REPO)
    built = {}
    for label, prefix in (("host", ["-m", "composer"]), ("swapped", ["-c", SWAP_AND_RUN])):
        run = subprocess.run([sys.executable, *prefix, "build", os.fspath(profile),
                              "--output-dir", os.fspath(work / label),
                              "--cache-dir", os.fspath(work / f"cache-{label}")],
                             env=env, capture_output=True, text=True, timeout=timeout)
        assert run.returncode == 0, run.stderr
        built[label] = files_of(work / label / name)
    return built["host"], built["swapped"]
