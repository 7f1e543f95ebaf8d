"""``make repro``: each shipped profile, built twice under different conditions (time zone,
locale, umask, working folder, HOME, file creation order, cache, one CPU or two), gives the
same bytes in every file of its output folder. The mirror holds the real 3.20.3 (x86_64 and
aarch64) and edge minirootfs tarballs and a test-signed main repository with the packages the virt and
standard presets install (Debian's kernel and loaders under Alpine's names)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, require_shared
from tests.helpers.apkrepo import PackageSpec, build_repository, signing_key
from tests.helpers.bootpkgs import Unavailable, base_packages, host_dmsetup_package
from tests.helpers.gpg import SigningKey
from tests.helpers.mirror import build_mirror
from tests.helpers.repro import copy_in_order, listing_keeps_order, reproduce

pytestmark = pytest.mark.slow

KEY = signing_key()
SHIPPED = sorted(p.stem for p in (REPO / "profiles").glob("*.yaml"))


@pytest.fixture(scope="module")
def repro_mirror(tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey,
                 boot_packages: dict[str, PackageSpec]) -> str:
    fixtures = require_shared() / "minirootfs"
    root = tmp_path_factory.mktemp("repro-mirror")
    for arch in ("x86_64", "aarch64"):
        build_mirror(root, key=signing_key, arch=arch, tarball=(
            fixtures / f"alpine-minirootfs-3.20.3-{arch}.tar.gz").read_bytes())
    build_mirror(root, key=signing_key, branch="edge", version="20240923",
                 tarball=(fixtures / "alpine-minirootfs-20240923-x86_64.tar.gz").read_bytes())
    try:
        dmsetup = [host_dmsetup_package()]
    except Unavailable as exc:
        pytest.skip(str(exc))
    build_repository(root / "v3.20" / "main",
                     [*base_packages(), *boot_packages.values(), *dmsetup], KEY)
    build_repository(root / "v3.20" / "community", [], KEY)
    return root.resolve().as_uri()


def test_shipped_profiles_are_all_covered() -> None:
    assert SHIPPED == ["container", "edge", "minirootfs", "standard", "virt", "virt-disk"]


def child_profile(folder: Path, shipped: str, key: SigningKey) -> Path:
    """``profiles/<shipped>.yaml`` with the test keys and an overlay tree of nested files."""
    folder.mkdir(parents=True)
    (folder / "release-key.asc").write_bytes(key.public_armored)
    (folder / KEY.name).write_bytes(KEY.public_pem)
    for name in ("etc/b.conf", "etc/a.conf", "usr/local/bin/tool", "srv/z", "srv/a/y"):
        path = folder / "files" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{name}\n")
    os.chmod(folder / "files" / "usr/local/bin/tool", 0o755)
    data = {"name": shipped, "extends": os.fspath(REPO / "profiles" / f"{shipped}.yaml"),
            "trust": {"fingerprint": key.fingerprint, "key": "release-key.asc"},
            "keys": [KEY.name], "overlay": {"tree": "files"}}
    path = folder / f"{shipped}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("shipped", SHIPPED)
def test_two_builds_under_different_conditions_are_identical(
        tmp_path: Path, repro_mirror: str, signing_key: SigningKey, shipped: str) -> None:
    profile = child_profile(tmp_path / "source", shipped, signing_key)
    result = reproduce(profile, mirror=repro_mirror, work=tmp_path / "work")
    assert result.same, f"{result.differing}\n{result.report}"
    assert {"SHA256SUMS", "manifest.json", "lock.json", "provenance.intoto.json"} \
        <= set(result.files)


def test_a_difference_is_explained(tmp_path: Path) -> None:
    """The report names what differs (here: one tar member's mode), with diffoscope's view."""
    import io
    import tarfile

    from tests.helpers.repro import explain

    def tar(mode: int) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as out:
            info = tarfile.TarInfo("./etc/motd")
            info.size, info.mode = 3, mode
            out.addfile(info, io.BytesIO(b"hi\n"))
        return buf.getvalue()

    for name, mode in (("a", 0o644), ("b", 0o600)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.tar").write_bytes(tar(mode))
    report = explain(tmp_path / "a", tmp_path / "b", ["x.tar"])
    assert "./etc/motd: mode 0o644 -> 0o600" in report or "mode" in report.splitlines()[0]
    if "diffoscope is not installed" not in report:
        assert "--- diffoscope x.tar" in report and "-rw-r--r--" in report


def test_creation_order_really_differs(tmp_path: Path) -> None:
    """Where the profiles are copied, the two copies list their entries in different orders,
    or the variation tests nothing."""
    import tempfile

    place = listing_keeps_order()
    if place is None:
        pytest.skip("no tmpfs (/dev/shm) here: ext4 lists entries by hash, so the order files "
                    "were created in cannot show")
    source = tmp_path / "s"
    source.mkdir()
    for name in "abcdefgh":
        (source / name).write_text(name)
    folder = Path(tempfile.mkdtemp(dir=place))
    try:
        copy_in_order(source, folder / "fwd", reverse=False)
        copy_in_order(source, folder / "rev", reverse=True)
        forward, backward = os.listdir(folder / "fwd"), os.listdir(folder / "rev")
    finally:
        import shutil

        shutil.rmtree(folder)
    assert forward != backward and sorted(forward) == sorted(backward)
