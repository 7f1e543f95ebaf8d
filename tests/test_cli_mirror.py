"""``verify --rebuild`` across mirrors: a build fetched over HTTP rebuilds identically from
the same files read as a folder, and without ``--mirror`` it uses the recorded mirror."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli, write_profile
from tests.helpers.gpg import SigningKey
from tests.helpers.httpserver import Server
from tests.helpers.mirror import MirrorInfo


def test_rebuild_from_another_mirror_and_from_the_recorded_one(
        tmp_path: Path, workdir: Path, mirror: MirrorInfo, http_mirror: Server,
        signing_key: SigningKey) -> None:
    # The profile's own mirror does not exist: only --mirror or the recorded mirror can work.
    profile = write_profile(workdir, mirror_url=(tmp_path / "gone").as_uri(), key=signing_key,
                            outputs=[{"format": "tar", "compression": "none"}, {"format": "oci"}])
    out = tmp_path / "out"
    built = run_cli("build", profile, "--mirror", http_mirror.url, "--output-dir", out,
                    "--cache-dir", tmp_path / "cache-http")
    assert built.returncode == 0, built.stderr
    manifest = json.loads((out / "test" / "manifest.json").read_bytes())
    assert manifest["mirror"] == http_mirror.url
    artifacts = [out / "test" / "oci", out / "test" / "test-3.20.3-x86_64.tar"]

    from_folder = run_cli("verify", "--rebuild", profile, "--mirror", mirror.root,
                          "--output-dir", out, "--cache-dir", tmp_path / "cache-file")
    assert from_folder.returncode == 0, from_folder.stderr
    assert "recorded mirror" not in from_folder.stderr
    listed = from_folder.stdout.splitlines()
    assert len(listed) == 6 and listed[-1] == f"rebuild identical  {artifacts[1]}"
    assert all(line.startswith(f"rebuild identical  {artifacts[0]}/") for line in listed[:-1])

    served = len(http_mirror.requests)
    recorded = run_cli("verify", "--rebuild", profile, "--output-dir", out,
                       "--cache-dir", tmp_path / "cache-recorded")
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout == from_folder.stdout
    assert f"==> rebuilding from the recorded mirror {http_mirror.url} (--mirror chooses " \
           "another)" in recorded.stderr
    assert http_mirror.count(mirror.relpath(mirror.filename)) == 2
    assert len(http_mirror.requests) > served

    manifest["mirror"] = "ftp://example.org/alpine"
    (out / "test" / "manifest.json").write_text(json.dumps(manifest))
    damaged = run_cli("verify", "--rebuild", profile, "--output-dir", out,
                      "--cache-dir", tmp_path / "cache-recorded")
    assert damaged.returncode == 4
    assert damaged.stderr.splitlines()[-1] == (
        f"alpine-composer: error: {out / 'test' / 'manifest.json'}: mirror "
        "'ftp://example.org/alpine' is not an http://, https:// or file:// URL")
