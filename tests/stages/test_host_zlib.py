"""Output bytes do not depend on the host's zlib or liblzma.

The same profile (every output format, an ISO with its gzip initramfs included) is built
twice through the real CLI, each in its own process: once as it is, and once with Python's
``zlib`` module replaced by another deflate implementation (the zlib-ng binding presented
under the name ``zlib``, as on a Fedora or RHEL 10 host) and ``lzma`` replaced by a module
that refuses to compress. Every file of the two output folders must be byte-identical.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import yaml
import zlib_ng.zlib_ng as zlib_ng

from tests.conftest import REPO, require_shared
from tests.helpers.apkrepo import PackageSpec, build_repository
from tests.helpers.bootpkgs import base_packages
from tests.helpers.mirror import build_mirror
from tests.stages.conftest import KEY
from tests.stages.test_golden import GOLDEN, PROFILE

pytestmark = pytest.mark.slow

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

OUTPUTS = [{"format": "iso"}, {"format": "tar", "compression": "gzip"},
           {"format": "tar", "compression": "zstd"}, {"format": "tar", "compression": "xz"},
           {"format": "oci", "compression": "gzip"},
           {"format": "oci-archive", "compression": "zstd"}, {"format": "docker-archive"}]


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_outputs_are_the_same_with_another_zlib_and_no_host_liblzma(
        tmp_path: Path, boot_packages: dict[str, PackageSpec]) -> None:
    sample = bytes(range(256)) * 64 + b"composer " * 4096
    if zlib_ng.compress(sample, 6) == zlib.compress(sample, 6):
        pytest.skip("this host's zlib is zlib-ng already: nothing to swap it for")
    fixtures = require_shared()
    real = fixtures / "minirootfs" / "alpine-minirootfs-3.20.3-x86_64.tar.gz"
    mirror = build_mirror(tmp_path / "mirror", key=None, signed=False, tarball=real.read_bytes())
    build_repository(tmp_path / "mirror" / "v3.20" / "main",
                     [*base_packages(), *boot_packages.values()], KEY)
    folder = tmp_path / "profile"
    folder.mkdir()
    shutil.copy(GOLDEN / "release-key.asc", folder / "release-key.asc")
    (folder / KEY.name).write_bytes(KEY.public_pem)
    profile = folder / "virt-all.yaml"
    profile.write_text(yaml.safe_dump({
        "name": "virt-all", "extends": os.fspath(REPO / "profiles" / "virt.yaml"),
        "mirror": mirror.file_url, "trust": PROFILE["trust"], "repositories": ["main"],
        "keys": [KEY.name], "outputs": OUTPUTS}))
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    env["PYTHONPATH"] = os.fspath(REPO)
    built = {}
    for label, prefix in (("host", ["-m", "composer"]), ("swapped", ["-c", SWAP_AND_RUN])):
        run = subprocess.run([sys.executable, *prefix, "build", os.fspath(profile),
                              "--output-dir", os.fspath(tmp_path / label),
                              "--cache-dir", os.fspath(tmp_path / f"cache-{label}")],
                             env=env, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stderr
        built[label] = files_of(tmp_path / label / "virt-all")
    host, swapped = built["host"], built["swapped"]
    assert {name for name in host if "/" not in name} >= {
        "virt-all-3.20.3-x86_64.iso", "virt-all-3.20.3-x86_64.tar.gz",
        "virt-all-3.20.3-x86_64.tar.zst", "virt-all-3.20.3-x86_64.tar.xz",
        "virt-all-3.20.3.oci.tar", "virt-all-3.20.3-x86_64.docker.tar", "manifest.json"}
    assert sorted(swapped) == sorted(host)
    assert [name for name in host if host[name] != swapped[name]] == []
