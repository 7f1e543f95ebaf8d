"""What `verify` reads is checked for shape before it is used: names, SHA256SUMS, OCI documents."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from composer.errors import VerificationError
from composer.manifest import MAX_ARTIFACTS, artifact_path_problem, parse_sha256sums
from composer.verify import verify_outputs
from composer.verify_oci import MAX_INDEX_DEPTH, MAX_JSON_BLOB, verify_oci_layout
from composer.writers.oci import canonical_json
from tests.helpers.mirror import make_minirootfs_tarball
from tests.helpers.outputs import chain, nested_indexes, put, rechain, relist, write_output_folder

HEX = "ab" * 32


@pytest.mark.parametrize(("name", "problem"), [
    ("t.tar.gz", None),
    ("oci/blobs/sha256/" + HEX, None),
    ("", "empty file name"),
    ("a" * 300, "file name 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa…' "
                "(300 characters) has a part longer than 255 bytes"),
    ("é" * 200, "file name 'éééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé…' "
                "(200 characters) has a part longer than 255 bytes"),
    ("../x", "file name '../x' has an empty, '.' or '..' part"),
    ("a//b", "file name 'a//b' has an empty, '.' or '..' part"),
    ("/etc/passwd", "file name '/etc/passwd' is absolute"),
    ("a\nb", "file name 'a\\nb' holds a control character"),
    ("a/" * 9 + "b", "file name 'a/a/a/a/a/a/a/a/a/b' has more than 8 parts"),
    ("a" * 1025, "file name of 1025 characters (at most 1024)"),
])
def test_artifact_names_are_checked_before_the_filesystem(name: str, problem: str | None) -> None:
    assert artifact_path_problem(name) == problem


@pytest.mark.parametrize(("data", "message"), [
    (f"{HEX}  a\n{HEX}  a\n".encode(), "S: line 2: 'a' is listed twice"),
    (f"{HEX} a\n".encode(), "S: line 1 is not in sha256sum format"),
    (f"{HEX[:-1]}g  a\n".encode(), "S: line 1 is not in sha256sum format"),
    (b"\xff", "S: not UTF-8 at byte 0"),
    (f"{HEX}  ../a\n".encode(), "S: line 1: file name '../a' has an empty, '.' or '..' part"),
    ("".join(f"{HEX}  f{i}\n" for i in range(MAX_ARTIFACTS + 1)).encode(),
     f"S: more than {MAX_ARTIFACTS} entries"),
])
def test_sha256sums_are_read_strictly(data: bytes, message: str) -> None:
    with pytest.raises(VerificationError) as err:
        parse_sha256sums(data, source="S")
    assert str(err.value) == message


def test_sha256sums_in_both_sha256sum_styles() -> None:
    assert parse_sha256sums(f"{HEX.upper()}  a\n{HEX} *b\n\n".encode(), source="S") == {
        "a": HEX, "b": HEX}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_output_folder(tmp_path_factory.mktemp("outputs") / "t", make_minirootfs_tarball())


@pytest.fixture
def folder(template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(template, tmp_path / "t"))


def test_a_good_folder_verifies(folder: Path) -> None:
    assert "t-3.20.3-x86_64.iso" in verify_outputs(folder).checked


def test_index_chains_stop_at_the_depth_limit(folder: Path) -> None:
    layout = folder / "oci"
    (layout / "index.json").write_bytes(nested_indexes(layout, MAX_INDEX_DEPTH - 2))
    verify_oci_layout(layout)
    (layout / "index.json").write_bytes(nested_indexes(layout, MAX_INDEX_DEPTH - 1))
    with pytest.raises(VerificationError, match=r": image indexes nested more than 8 deep$"):
        verify_oci_layout(layout)


def test_a_json_blob_past_the_cap_is_not_read(folder: Path) -> None:
    layout = folder / "oci"
    _, _, manifest = chain(layout)
    manifest["annotations"] = {"x": "y" * MAX_JSON_BLOB}
    rechain(layout, layout, "manifest", canonical_json(manifest))
    with pytest.raises(VerificationError, match=rf"more than the {MAX_JSON_BLOB} a JSON document "
                                                "may have$"):
        verify_oci_layout(layout)


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m["layers"][0].update(mediaType=["x"]),
     "$.layers[0].mediaType: expected a string, found an array"),
    (lambda m: m["layers"][0].update(size=-1), "$.layers[0].size: -1 is outside"),
    (lambda m: m["layers"][0].update(digest="sha256:" + "a" * 300),
     "$.layers[0].digest: string of 307 characters, more than 255"),
    (lambda m: m.update(layers={"a": 1}), "$.layers: expected an array, found an object"),
    (lambda m: m.update(schemaVersion=True), "not an image manifest with schemaVersion 2"),
    (lambda m: m["config"].update(digest=m["config"]["digest"] + "\n"),
     "is not sha256:<64 hex>"),
])
def test_manifest_fields_are_checked_for_shape(folder: Path, change: object,
                                               message: str) -> None:
    layout = folder / "oci"
    _, _, manifest = chain(layout)
    change(manifest)  # type: ignore[operator]
    rechain(layout, layout, "manifest", json.dumps(manifest).encode())
    with pytest.raises(VerificationError) as err:
        verify_oci_layout(layout)
    assert message in str(err.value)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400


def test_recorded_outputs_are_checked_for_shape(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_bytes())
    manifest["outputs"][0]["sha256"] = "A" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(VerificationError, match=r"\$\.outputs\[0\]\.sha256: 'AAAA.*' .*is not 64 "
                                                "lowercase hex digits$"):
        verify_outputs(folder)
    relist(folder)
    (folder / "manifest.json").unlink()
    (folder / "manifest.json").mkdir()
    with pytest.raises(VerificationError, match=r"manifest.json: not a regular file$"):
        verify_outputs(folder)
    assert put(folder / "oci", b"")["size"] == 0
