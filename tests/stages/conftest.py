"""In-process build tests: a BuildContext for a profile against the file:// test mirror, and a
composed system to boot (the real 3.20.3 minirootfs plus test-signed boot packages)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from composer.apk import db
from composer.apk.install import install_packages
from composer.apk.package import VerifiedPackage, verify_apk
from composer.archive import load_tar
from composer.context import BuildContext
from composer.profile import load_profile
from composer.tree import FileTree
from tests.conftest import require_shared
from tests.helpers.apkrepo import PackageSpec, build_apk, signing_key
from tests.helpers.bootpkgs import (
    Unavailable,
    debian_arm64_boot,
    debian_kernel,
    gummiboot_package,
    kernel_package,
    marker_inittab,
    syslinux_package,
)

ContextFor = Callable[..., BuildContext]


@pytest.fixture
def logs() -> list[str]:
    return []


@pytest.fixture
def context_for(tmp_path: Path, logs: list[str]) -> ContextFor:
    """``context_for(profile_path, **flags)``: a context writing under ``tmp_path``, with
    its own cache, no progress bars, no SOURCE_DATE_EPOCH, and log lines kept in ``logs``;
    ``overrides`` are the profile overrides CLI flags give (``{"mirror": …}``)."""

    def make(profile: Path, *, env: dict[str, str] | None = None,
             overrides: dict[str, Any] | None = None, **flags: Any) -> BuildContext:
        flags.setdefault("output_dir", tmp_path / "out")
        flags.setdefault("cache_dir", tmp_path / "cache")
        return BuildContext.from_environment(load_profile(profile, overrides=overrides),
                                             env=env or {}, progress=False, retries=0,
                                             retry_delay=0.0, log=logs.append, **flags)

    return make


EPOCH = 1725622440
KEY = signing_key()


@pytest.fixture(scope="session")
def boot_packages(request: pytest.FixtureRequest) -> dict[str, PackageSpec]:
    """linux-virt, linux-lts, syslinux and gummiboot wrapping Debian's binaries."""
    try:
        kernel = debian_kernel(request.config.cache.mkdir("debian-kernel"))
        specs = [kernel_package(kernel, "virt"), kernel_package(kernel, "lts"),
                 syslinux_package(), gummiboot_package()]
    except Unavailable as exc:
        pytest.skip(str(exc))
    return {spec.name: spec for spec in specs}


@pytest.fixture(scope="session")
def verified_boot_packages(boot_packages: dict[str, PackageSpec]) -> dict[str, VerifiedPackage]:
    return {name: verify_apk(build_apk(spec, KEY), KEY.trusted(), source=spec.file_name)
            for name, spec in boot_packages.items()}


ComposeTree = Callable[..., FileTree]


@pytest.fixture(scope="session")
def compose_tree(verified_boot_packages: dict[str, VerifiedPackage]) -> ComposeTree:
    """Make a composed tree: minirootfs + the named boot packages + a marker inittab."""
    fixtures = require_shared()
    minirootfs = fixtures / "minirootfs" / "alpine-minirootfs-3.20.3-x86_64.tar.gz"

    def compose(packages: Sequence[str] = ("linux-virt", "syslinux", "gummiboot"),
                inittab: bytes | None = None) -> FileTree:
        tree = FileTree()
        with minirootfs.open("rb") as fh:
            load_tar(fh, tree, source=minirootfs.name)
        world = db.parse_world(tree.read_file(db.WORLD_PATH)) + list(packages)
        install_packages(tree, [verified_boot_packages[name] for name in packages],
                         world=world, arch="x86_64", keys={KEY.name: KEY.public_pem},
                         epoch=EPOCH)
        tree.add_file("etc/inittab", inittab if inittab is not None else marker_inittab(),
                      mtime=EPOCH)
        return tree

    return compose


def aarch64_marker_tree(request: pytest.FixtureRequest,
                        extra: Sequence[PackageSpec] = ()) -> FileTree:
    """Alpine's real 3.20.3 aarch64 minirootfs with Debian's arm64 cloud kernel (and its disk
    modules) and systemd-boot's arm64 stub installed as ``linux-virt`` and ``gummiboot``
    (and ``extra``), whose inittab prints the boot marker on ttyAMA0 and powers off."""
    fixtures = require_shared()
    assert request.config.cache is not None
    try:
        debian = debian_arm64_boot(request.config.cache.mkdir("debian-arm64"))
    except Unavailable as exc:
        pytest.skip(str(exc))
    specs = [kernel_package(debian.kernel, "virt", arch="aarch64"),
             gummiboot_package(arm64_stub=debian.stub), *extra]
    packages = [verify_apk(build_apk(spec, KEY), KEY.trusted(), source=spec.file_name)
                for spec in specs]
    minirootfs = fixtures / "minirootfs" / "alpine-minirootfs-3.20.3-aarch64.tar.gz"
    tree = FileTree()
    with minirootfs.open("rb") as fh:
        load_tar(fh, tree, source=minirootfs.name)
    world = db.parse_world(tree.read_file(db.WORLD_PATH)) + [s.name for s in specs]
    install_packages(tree, packages, world=world, arch="aarch64", keys={KEY.name: KEY.public_pem},
                     epoch=EPOCH)
    tree.add_file("etc/inittab", marker_inittab(port="ttyAMA0"), mtime=EPOCH)
    return tree
