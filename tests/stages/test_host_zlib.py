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
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, require_shared
from tests.helpers.apkrepo import PackageSpec, build_repository
from tests.helpers.bootpkgs import base_packages
from tests.helpers.hostzlib import build_with_both_zlibs
from tests.helpers.mirror import build_mirror
from tests.stages.conftest import KEY
from tests.stages.test_golden import GOLDEN, PROFILE

pytestmark = pytest.mark.slow

OUTPUTS = [{"format": "iso"}, {"format": "tar", "compression": "gzip"},
           {"format": "tar", "compression": "zstd"}, {"format": "tar", "compression": "xz"},
           {"format": "oci", "compression": "gzip"},
           {"format": "oci-archive", "compression": "zstd"}, {"format": "docker-archive"}]


def test_outputs_are_the_same_with_another_zlib_and_no_host_liblzma(
        tmp_path: Path, boot_packages: dict[str, PackageSpec]) -> None:
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
    host, swapped = build_with_both_zlibs(profile, "virt-all", tmp_path, timeout=900)
    assert {name for name in host if "/" not in name} >= {
        "virt-all-3.20.3-x86_64.iso", "virt-all-3.20.3-x86_64.tar.gz",
        "virt-all-3.20.3-x86_64.tar.zst", "virt-all-3.20.3-x86_64.tar.xz",
        "virt-all-3.20.3.oci.tar", "virt-all-3.20.3-x86_64.docker.tar", "manifest.json"}
    assert sorted(swapped) == sorted(host)
    assert [name for name in host if host[name] != swapped[name]] == []
