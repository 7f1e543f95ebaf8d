"""A whole build against fixed inputs must keep its manifest, and so every output's bytes.

The inputs are deterministic: the test minirootfs (fixed bytes), a committed public
release key (the release is unsigned, ``allow_unsigned``, so no signing time enters),
a fixed overlay. The manifest is compared after the one thing that varies between
machines, the temporary folder in file:// URLs, is replaced by ``<tmp>``. The profile
digest does not cover the build mirror, so it is pinned like everything else.

The shipped profiles that need no packages (``minirootfs``, ``edge``) are also built from
the real Alpine minirootfs tarballs, and every artifact's sha256 is compared with
tests/golden/shipped-outputs.json: that pins the bytes of the pinned compressors (zlib-ng,
zstd) on real data, so upgrading one is a reviewed change, not an accident.

``make golden`` rewrites tests/golden/build-manifest.json, .sha256 and shipped-outputs.json
after a deliberate change; review their diff.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from composer.stages.pipeline import build
from tests.conftest import REPO, require_shared
from tests.helpers.mirror import build_mirror
from tests.stages.conftest import ContextFor

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
GOLDEN_JSON = GOLDEN / "build-manifest.json"
GOLDEN_SHA256 = GOLDEN / "build-manifest.sha256"
SHIPPED_JSON = GOLDEN / "shipped-outputs.json"
UPDATE = os.environ.get("GOLDEN_UPDATE") == "1"

PROFILE = {
    "name": "golden",
    "branch": "v3.20",
    # Two platforms, so the golden OCI outputs cover the nested image index.
    "arch": ["x86_64", "aarch64"],
    "trust": {"fingerprint": "7AE631D819452E91652E14E19C30A736C3E7F3C1", "key": "release-key.asc",
              "allow_unsigned": True},
    "overlay": {
        "remove": ["/home/user/.profile"],
        "directories": [{"path": "/srv/data", "mode": "0750", "uid": 100, "gid": 101}],
        "files": [{"path": "/etc/motd", "content": "golden\n"},
                  {"path": "/etc/app.conf", "source": "app.conf", "mode": "0600"}],
        "symlinks": [{"path": "/usr/local/bin/app", "target": "/opt/app/bin/app"}],
        "hostname": "golden",
    },
    "config": {"cmd": ["/bin/sh"], "env": {"LANG": "C.UTF-8"}, "labels": {"team": "golden"}},
    "outputs": [{"format": "tar", "compression": "gzip"}, {"format": "tar", "compression": "zstd"},
                {"format": "tar", "compression": "xz"}, {"format": "oci"},
                {"format": "oci-archive", "compression": "zstd"}],
}


def test_golden_manifest(tmp_path: Path, context_for: ContextFor) -> None:
    mirror = build_mirror(tmp_path / "mirror", key=None, signed=False)
    build_mirror(tmp_path / "mirror", key=None, signed=False, arch="aarch64")
    folder = tmp_path / "profile"
    folder.mkdir()
    shutil.copy(GOLDEN / "release-key.asc", folder / "release-key.asc")
    (folder / "app.conf").write_bytes(b"setting = 1\n")
    path = folder / "golden.yaml"
    path.write_text(yaml.safe_dump({**PROFILE, "mirror": mirror.file_url}, sort_keys=False))
    ctx = context_for(path)
    result = build(ctx)
    text = result.manifest.to_json().decode()
    text = text.replace(tmp_path.resolve().as_uri(), "file://<tmp>")
    normalized = text.encode()
    digest = hashlib.sha256(normalized).hexdigest()
    # The provenance names no build mirror and no temporary folder: pinned as written.
    statement = (result.output_dir / "provenance.intoto.json").read_bytes()
    sums = (f"{digest}  {GOLDEN_JSON.name}\n"
            f"{hashlib.sha256(statement).hexdigest()}  provenance.intoto.json\n")
    if UPDATE:
        GOLDEN_JSON.write_bytes(normalized)
        GOLDEN_SHA256.write_text(sums)
    assert normalized.decode() == GOLDEN_JSON.read_text()
    assert GOLDEN_SHA256.read_text() == sums


# shipped profile → (branch, release, real minirootfs in ../shared)
SHIPPED = {"minirootfs": ("v3.20", "3.20.3", "alpine-minirootfs-3.20.3-x86_64.tar.gz"),
           "edge": ("edge", "20240923", "alpine-minirootfs-20240923-x86_64.tar.gz")}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_profile_outputs(name: str, tmp_path: Path, context_for: ContextFor) -> None:
    fixtures = require_shared()
    branch, version, tarball = SHIPPED[name]
    mirror = build_mirror(tmp_path / "mirror", key=None, signed=False, branch=branch,
                          version=version, tarball=(fixtures / "minirootfs" / tarball).read_bytes())
    folder = tmp_path / "profile"
    folder.mkdir()
    shutil.copy(GOLDEN / "release-key.asc", folder / "release-key.asc")
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "extends": os.fspath(REPO / "profiles" / f"{name}.yaml"),
        "mirror": mirror.file_url,
        "trust": {**PROFILE["trust"]}}))  # type: ignore[dict-item]
    result = build(context_for(path))
    digests = {o.path: o.sha256 for o in result.outputs}
    golden = json.loads(SHIPPED_JSON.read_text()) if SHIPPED_JSON.exists() else {}
    if UPDATE:
        golden[name] = digests
        SHIPPED_JSON.write_text(json.dumps(golden, indent=2, sort_keys=True) + "\n")
    assert digests == golden[name]
