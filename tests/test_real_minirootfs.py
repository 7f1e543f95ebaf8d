"""Alpine's real 3.20.3 minirootfs through the whole pipeline keeps every member exactly."""

from __future__ import annotations

import tarfile
from pathlib import Path

from tests.conftest import require_shared, run_cli, write_profile
from tests.helpers.gpg import SigningKey
from tests.helpers.httpserver import serve_directory
from tests.helpers.mirror import build_mirror


def describe(path: Path) -> dict[str, tuple[object, ...]]:
    with tarfile.open(path) as tf:
        return {m.name.rstrip("/") or ".": (
            tarfile.REGTYPE if m.islnk() else m.type, m.mode, m.uid, m.gid,
            "" if m.islnk() else m.linkname, m.devmajor if m.isdev() else 0,
            tf.extractfile(m).read() if m.isfile() or m.islnk() else None) for m in tf}


def test_real_minirootfs_round_trips_exactly(tmp_path: Path, signing_key: SigningKey) -> None:
    fixtures = require_shared()
    real = fixtures / "minirootfs" / "alpine-minirootfs-3.20.3-x86_64.tar.gz"
    mirror = build_mirror(tmp_path / "mirror", key=signing_key, tarball=real.read_bytes())
    with serve_directory(mirror.root) as server:
        profile = write_profile(tmp_path / "p", mirror_url=server.url, key=signing_key,
                                name="real")
        out = tmp_path / "out"
        result = run_cli("build", profile, "--output-dir", out, "--cache-dir", tmp_path / "c")
    assert result.returncode == 0, result.stderr
    ours = out / "real" / "real-3.20.3-x86_64.tar.gz"
    expected = describe(real)
    got = describe(ours)
    assert len(expected) == 518
    assert got == expected
    with tarfile.open(real) as tf:
        newest = max(m.mtime for m in tf)
    with tarfile.open(ours) as tf:
        assert {m.mtime for m in tf} == {newest}  # the newest input timestamp, never "now"
