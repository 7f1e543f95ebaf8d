"""Stage layers: what each layer holds, and that umoci unpacks the layers to the final tree."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from composer.errors import OutputError
from composer.tree import EntryType, FileTree, StageSnapshot
from composer.writers.layers import diff_entries, split_layers
from composer.writers.oci import write_oci_layout
from composer.writers.tar import LAYER_STYLE, write_tar
from tests.writers.oci_trees import blob_path, small_tree
from tests.writers.test_oci_tools import assert_rootfs_matches_tree, image_spec, umoci_unpack


def staged() -> tuple[FileTree, list[StageSnapshot]]:
    """small_tree as the base, then a stage that adds, changes, removes and retypes paths."""
    tree = small_tree()
    tree.add_file("etc/-old", b"a file whose name sorts before its whiteout\n")
    base = StageSnapshot("base", dict(tree.entries), "base")
    tree.add_file("etc/os-release", b"ID=alpine\nVERSION_ID=3.21.0\n")      # content changed
    tree.add_dir("tmp", mode=0o1777)                                         # same again: not in the layer
    tree.add_file("etc/motd", b"hello\n")                                    # added
    tree.remove("home/user")                                                 # a folder and its file
    tree.remove("etc/shadow")
    tree.remove("bin/ls")
    tree.add_file("bin/ls", b"#!/bin/sh\n", mode=0o755)                      # symlink -> file
    tree.remove("etc/-old")
    tree.add_dir("etc/-old")                                                 # file -> folder
    tree.add_file("etc/-old/inside", b"x\n")
    packages = StageSnapshot("packages", dict(tree.entries), "packages")
    tree.add_dir("srv/www", mode=0o750, uid=100, gid=101)                    # the overlay
    tree.add_file("srv/www/index.html", b"<p>hi</p>\n", uid=100)
    return tree, [base, packages]


def member_names(layer_tree: FileTree) -> list[str]:
    out = io.BytesIO()
    write_tar(layer_tree, out, mtime=0, style=LAYER_STYLE)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        return tf.getnames()


def test_each_layer_holds_what_its_stage_changed() -> None:
    tree, stages = staged()
    layers = split_layers(stages, tree.entries, "overlay")
    assert [layer.comment for layer in layers] == ["base", "packages", "overlay"]
    assert set(member_names(layers[0].tree)) == {p for p in stages[0].entries if p}
    assert member_names(layers[1].tree) == [
        "etc/.wh.-old", "etc/.wh.shadow", "home/.wh.user",    # whiteouts first; a symlink
        "bin", "bin/ls",                                      # replaced by a file needs none
        "etc", "etc/-old", "etc/-old/inside", "etc/motd", "etc/os-release", "home"]
    assert member_names(layers[2].tree) == ["srv", "srv/www", "srv/www/index.html"]


def test_unchanged_content_in_a_new_blob_is_not_a_change() -> None:
    lower = small_tree()
    upper = small_tree()  # equal entries, different blob objects
    assert diff_entries(lower.entries, upper.entries) == {}
    upper.add_file("etc/os-release", b"changed\n")
    assert sorted(diff_entries(lower.entries, upper.entries)) == ["etc", "etc/os-release"]


def test_empty_stages_are_left_out_and_whiteout_names_refused() -> None:
    tree = small_tree()
    same = StageSnapshot("packages", dict(tree.entries), "packages")
    layers = split_layers([StageSnapshot("base", {"": tree.entries[""]}, "base"), same],
                          tree.entries, "overlay")
    assert [layer.comment for layer in layers] == ["packages"]
    tree.add_file("etc/.wh.odd", b"")
    with pytest.raises(OutputError, match=r"/etc/\.wh\.odd is named like an OCI whiteout"):
        split_layers([], tree.entries, "overlay")


def test_a_removed_folder_gets_one_whiteout_not_one_per_child() -> None:
    lower = small_tree()
    upper = small_tree()
    upper.remove("home")
    assert sorted(diff_entries(lower.entries, upper.entries)) == [".wh.home"]


def test_layered_layout_unpacks_to_the_final_tree_in_umoci(tmp_path: Path) -> None:
    if shutil.which("umoci") is None:
        pytest.skip("umoci is not installed (apt-get install umoci)")
    tree, stages = staged()
    layers = split_layers(stages, tree.entries, "overlay")
    out = tmp_path / "layout"
    result = write_oci_layout(out, [image_spec(tree, layers=layers)], tag="3.20")
    manifest = json.loads(blob_path(out, result.image.digest).read_bytes())
    config = json.loads(blob_path(out, manifest["config"]["digest"]).read_bytes())
    assert len(manifest["layers"]) == len(config["rootfs"]["diff_ids"]) == 3
    assert [h["comment"] for h in config["history"]] == ["base", "packages", "overlay"]
    umoci_unpack(f"{out}:3.20", tmp_path / "bundle")
    assert_rootfs_matches_tree(tmp_path / "bundle" / "rootfs", tree)
    assert tree.get("bin/ls") is not None and tree.entries["bin/ls"].type == EntryType.FILE
