"""``layering: stages`` on a build with packages: base, packages and overlay layers that unpack
(umoci) to exactly what the single-layer image holds."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from composer.context import BuildContext
from composer.profile import load_profile
from composer.stages.pipeline import build
from tests.helpers.apkrepo import build_repository
from tests.helpers.apkrepo import signing_key as apk_signing_key
from tests.helpers.gpg import SigningKey
from tests.helpers.mirror import build_mirror, minirootfs_without_world
from tests.test_cli_packages import HELLO, repo_profile

pytestmark = pytest.mark.slow


def layers_of(folder: Path) -> list[list[str]]:
    import json

    layout = folder / "oci"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    names = []
    for layer in manifest["layers"]:
        data = gzip.decompress((layout / "blobs/sha256" / layer["digest"][7:]).read_bytes())
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            names.append(tf.getnames())
    return names


def unpack(folder: Path, bundle: Path) -> dict[str, tuple[int, bytes | str | None]]:
    done = subprocess.run(["umoci", "unpack", *([] if os.geteuid() == 0 else ["--rootless"]),
                           "--image", f"{folder / 'oci'}:1", str(bundle)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rootfs = bundle / "rootfs"
    return {str(p.relative_to(rootfs)): (os.lstat(p).st_mode,
                                         os.readlink(p) if p.is_symlink()
                                         else p.read_bytes() if p.is_file() else None)
            for p in rootfs.rglob("*")}


def test_stage_layers_with_packages(tmp_path: Path, signing_key: SigningKey) -> None:
    if shutil.which("umoci") is None:
        pytest.skip("umoci is not installed (apt-get install umoci)")
    mirror = build_mirror(tmp_path / "mirror", key=signing_key, tarball=minirootfs_without_world())
    repo = build_repository(tmp_path / "repo", HELLO, apk_signing_key())
    built = {}
    for layering in ("stages", "single"):
        profile = repo_profile(tmp_path / layering, mirror, signing_key, repo.as_uri(), ["hello"],
                               accounts={"users": [{"name": "ops", "uid": 1200}]},
                               overlay={"files": [{"path": "/etc/motd", "content": "hi\n"}]})
        data = yaml.safe_load(profile.read_text())
        data["outputs"] = [{"format": "oci", "tag": "1", "layering": layering}]
        profile.write_text(yaml.safe_dump(data))
        ctx = BuildContext.from_environment(load_profile(profile), env={}, progress=False,
                                            output_dir=tmp_path / layering / "out",
                                            cache_dir=tmp_path / "cache", log=lambda _m: None)
        built[layering] = build(ctx).output_dir
    base, packages, system = layers_of(built["stages"])
    assert "usr/bin/hello" not in base and "lib/apk/db/installed" not in base
    assert {"usr/bin/hello", "usr/bin/hi", "usr/lib/libhello.so.1", "lib/apk/db/installed",
            "etc/apk/world"} <= set(packages)
    assert "etc/passwd" in packages  # the package script's adduser hello
    assert "etc/motd" not in packages and "etc/motd" in system and "etc/passwd" in system
    assert "usr/bin/hello" not in system
    [single] = layers_of(built["single"])
    assert sorted(single) == sorted(set(base) | set(packages) | set(system))  # no whiteouts needed
    assert unpack(built["stages"], tmp_path / "b1") == unpack(built["single"], tmp_path / "b2")
