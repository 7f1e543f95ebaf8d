"""What a push would send, read from a layout, and the command-line mistakes it refuses
before talking to any registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from composer.errors import UsageError, VerificationError
from composer.publish.command import parse_size
from composer.publish.layout import read_plan
from composer.writers.oci import MEDIA_INDEX, OciArtifact, write_oci_layout
from tests.conftest import run_cli, write_profile
from tests.helpers.gpg import SigningKey
from tests.helpers.mirror import MirrorInfo
from tests.writers.oci_trees import blob_path, small_tree
from tests.writers.test_oci_tools import image_spec


def test_plan_of_a_multi_arch_layout_with_an_artifact(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    result = write_oci_layout(layout, [image_spec(small_tree()), image_spec(small_tree(), "aarch64")],
                              tag="3.20", artifacts=[OciArtifact("aarch64", "application/spdx+json",
                                                                 b'{"spdx": 1}')])
    plan = read_plan(layout)
    assert plan.digest == result.image.digest and plan.image.media_type == MEDIA_INDEX
    assert plan.image.data == blob_path(layout, plan.digest).read_bytes()
    assert [c.digest for c in plan.children] == [i.manifest.digest for i in result.images]
    expected = {d.digest for i in result.images for d in (i.config, *(x.descriptor for x in i.layers))}
    artifact = result.images[1].artifacts[0]
    assert [a.digest for a in plan.artifacts] == [artifact.digest]
    assert plan.artifacts[0].subject == result.images[1].manifest.digest
    artifact_doc = json.loads(blob_path(layout, artifact.digest).read_bytes())
    expected |= {artifact_doc["config"]["digest"], artifact_doc["layers"][0]["digest"]}
    assert {b.digest for b in plan.blobs} == expected


def test_plan_refuses_a_changed_manifest_and_a_missing_blob(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    result = write_oci_layout(layout, [image_spec(small_tree())], tag="3.20")
    manifest = blob_path(layout, result.image.digest)
    data = manifest.read_bytes()
    manifest.write_bytes(data.replace(b'"schemaVersion":2', b'"schemaVersion":3'))
    with pytest.raises(VerificationError, match=f"{manifest}: content hashes to sha256:.*not to its name"):
        read_plan(layout)
    manifest.write_bytes(data)
    layer = blob_path(layout, result.images[0].layers[0].descriptor.digest)
    layer.unlink()
    with pytest.raises(VerificationError, match=f"{layer}: missing \\(layer sha256:"):
        read_plan(layout)
    with pytest.raises(UsageError, match="neither a build folder"):
        read_plan(tmp_path)


def test_sizes() -> None:
    assert parse_size("8M", what="--chunk-size") == 8 << 20
    assert parse_size("512k", what="--chunk-size") == 512 << 10
    assert parse_size("1MiB", what="--chunk-size") == 1 << 20
    assert parse_size("1048576", what="--chunk-size") == 1 << 20
    for bad in ("", "8X", "-1M", "1.5M", "12K"):
        with pytest.raises(UsageError, match="--chunk-size"):
            parse_size(bad, what="--chunk-size")


def test_command_line_mistakes(tmp_path: Path, mirror: MirrorInfo, signing_key: SigningKey) -> None:
    layout = tmp_path / "layout"
    result = write_oci_layout(layout, [image_spec(small_tree())], tag="3.20")
    other = "sha256:" + "0" * 64
    cases = [
        (["push", layout, "127.0.0.1:9/Bad/Name"], "repository 'Bad/Name' is not valid"),
        (["push", layout, f"127.0.0.1:9/x@{other}"], f"pins {other}, but the image in {layout} is "
                                                      f"{result.image.digest}"),
        (["push", layout, "127.0.0.1:9/x", "--insecure", "--ca-cert", layout / "index.json"],
         "--insecure (plain HTTP) and --ca-cert (TLS) exclude each other"),
        (["push", layout, "127.0.0.1:9/x", "--chunk-size", "1K"], "--chunk-size '1K': at least 64K"),
        (["push", tmp_path, "127.0.0.1:9/x"], "neither a build folder"),
        (["push", layout, "127.0.0.1:9/x", "--ca-cert", tmp_path / "nope.pem"], "nope.pem: no such file"),
    ]
    for argv, message in cases:
        done = run_cli(*argv)
        assert done.returncode == 2, (argv, done.stderr)
        assert message in done.stderr, (argv, done.stderr)
    tar_only = write_profile(tmp_path / "p", mirror_url=mirror.file_url, key=signing_key)
    done = run_cli("publish", tar_only, "127.0.0.1:9/x:1", "--output-dir", tmp_path / "out")
    assert done.returncode == 2
    assert "publish pushes the `oci` output, and the profile has none" in done.stderr
    assert not (tmp_path / "out").exists()
