"""OCI outputs checked by the real consumers: skopeo (interop) and umoci (strict unpack)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from composer.archive import load_tar
from composer.tree import EntryType, FileTree
from composer.verify_oci import verify_oci_layout
from composer.writers.oci import ALPINE_PATH, OciArtifact, OciImageSpec, write_oci_layout
from composer.writers.oci_archive import write_docker_archive, write_oci_archive

from .oci_trees import (
    CREATED,
    MINIROOTFS,
    blob_path,
    replace_config,
    replace_manifest,
    single_manifest,
    small_tree,
)

pytestmark = pytest.mark.slow

SKOPEO = shutil.which("skopeo")
UMOCI = shutil.which("umoci")
needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed (apt-get install skopeo)")
needs_umoci = pytest.mark.skipif(UMOCI is None, reason="umoci is not installed (apt-get install umoci)")
IS_ROOT = os.geteuid() == 0


def run(*argv: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def skopeo_json(*argv: str) -> dict[str, object]:
    return json.loads(run("skopeo", *argv).stdout)


def umoci_unpack(image: str, bundle: Path, *, ok: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["umoci", "unpack", "--image", image]
    if not IS_ROOT:
        argv.append("--rootless")
    return run(*argv, str(bundle), ok=ok)


def image_spec(tree: FileTree, arch: str = "x86_64", **kw: object) -> OciImageSpec:
    return OciImageSpec(tree=tree, arch=arch, created=CREATED, tool_version="0.1.0",  # type: ignore[arg-type]
                        entrypoint=["/bin/sh", "-c"], cmd=["echo hi"],
                        labels={"org.example.team": "os"}, **kw)


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    out = tmp_path / "layout"
    write_oci_layout(out, [image_spec(small_tree())], tag="3.20")
    return out


def assert_rootfs_matches_tree(rootfs: Path, tree: FileTree) -> None:
    """Every entry's type, mode, owner, link target and content, and hard links share an inode."""
    on_disk = {str(p.relative_to(rootfs)) for p in rootfs.rglob("*")}
    expected = {e.path for e in tree.walk() if e.path}
    assert on_disk == expected
    inodes: dict[int, int] = {}
    for entry in tree.walk():
        if not entry.path:
            continue
        st = os.lstat(rootfs / entry.path)
        assert stat.S_IMODE(st.st_mode) == (entry.mode if entry.type != EntryType.SYMLINK
                                             else stat.S_IMODE(st.st_mode)), entry.path
        if IS_ROOT:
            assert (st.st_uid, st.st_gid) == (entry.uid, entry.gid), entry.path
        if entry.type == EntryType.DIR:
            assert stat.S_ISDIR(st.st_mode), entry.path
        elif entry.type == EntryType.SYMLINK:
            assert stat.S_ISLNK(st.st_mode), entry.path
            assert os.readlink(rootfs / entry.path) == entry.target
        elif entry.type == EntryType.FILE:
            assert stat.S_ISREG(st.st_mode), entry.path
            data = (rootfs / entry.path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == (entry.blob.sha256 if entry.blob else
                                                        hashlib.sha256(b"").hexdigest())
            if entry.link_id:
                assert inodes.setdefault(entry.link_id, st.st_ino) == st.st_ino, entry.path


# ---------------------------------------------------------------- skopeo


@needs_skopeo
def test_skopeo_inspect_shows_the_config(layout: Path) -> None:
    info = skopeo_json("inspect", f"oci:{layout}:3.20")
    assert info["Architecture"] == "amd64"
    assert info["Os"] == "linux"
    assert info["Env"] == [f"PATH={ALPINE_PATH}"]
    assert info["Labels"] == {"org.example.team": "os"}
    assert info["Created"] == "2023-11-14T22:13:20Z"
    desc, manifest = single_manifest(layout)
    assert info["Digest"] == desc["digest"]
    assert info["Layers"] == [manifest["layers"][0]["digest"]]
    config = skopeo_json("inspect", "--config", f"oci:{layout}:3.20")
    assert config["config"]["Entrypoint"] == ["/bin/sh", "-c"]  # type: ignore[index]
    assert config["config"]["Cmd"] == ["echo hi"]  # type: ignore[index]
    assert config["rootfs"] == json.loads(blob_path(layout, manifest["config"]["digest"])
                                          .read_bytes())["rootfs"]


@needs_skopeo
def test_skopeo_copies_to_archives(layout: Path, tmp_path: Path) -> None:
    run("skopeo", "copy", f"oci:{layout}:3.20", f"oci-archive:{tmp_path / 'oci.tar'}:3.20")
    run("skopeo", "copy", f"oci:{layout}:3.20",
        f"docker-archive:{tmp_path / 'docker.tar'}:example/alpine:3.20")
    back = skopeo_json("inspect", f"docker-archive:{tmp_path / 'docker.tar'}:example/alpine:3.20")
    assert back["Architecture"] == "amd64"


@needs_skopeo
def test_skopeo_reads_our_own_archives(layout: Path, tmp_path: Path) -> None:
    oci_tar = tmp_path / "ours-oci.tar"
    with oci_tar.open("wb") as fh:
        write_oci_archive(layout, fh, mtime=CREATED)
    desc, _ = single_manifest(layout)
    assert skopeo_json("inspect", f"oci-archive:{oci_tar}:3.20")["Digest"] == desc["digest"]
    docker_tar = tmp_path / "ours-docker.tar"
    tree = small_tree()
    with docker_tar.open("wb") as fh:
        write_docker_archive([image_spec(tree)], fh, tag="example/alpine:3.20")
    info = skopeo_json("inspect", f"docker-archive:{docker_tar}:example/alpine:3.20")
    assert info["Architecture"] == "amd64"
    wrong = run("skopeo", "inspect", f"docker-archive:{docker_tar}:example/other:1", ok=False)
    assert wrong.returncode != 0
    # Round trip back into an OCI layout: skopeo must re-derive the same DiffID.
    copy = tmp_path / "copy"
    run("skopeo", "copy", f"docker-archive:{docker_tar}", f"oci:{copy}:back")
    copied_config = skopeo_json("inspect", "--config", f"oci:{copy}:back")
    ours = json.loads(blob_path(layout, single_manifest(layout)[1]["config"]["digest"]).read_bytes())
    assert copied_config["rootfs"] == ours["rootfs"]


@needs_skopeo
def test_skopeo_picks_each_platform_of_a_multi_arch_index(tmp_path: Path) -> None:
    result = write_oci_layout(tmp_path, [image_spec(small_tree()),
                                         image_spec(small_tree(), "aarch64"),
                                         image_spec(small_tree(), "armv7")], tag="3.20")
    for arch, variant in (("amd64", None), ("arm64", "v8"), ("arm", "v7")):
        argv = ["--override-arch", arch] + (["--override-variant", variant] if variant else [])
        config = skopeo_json(*argv, "inspect", "--config", f"oci:{tmp_path}:3.20")
        assert config["architecture"] == arch
        assert config.get("variant") == variant
    raw = json.loads(run("skopeo", "inspect", "--raw", f"oci:{tmp_path}:3.20").stdout)
    assert [m["digest"] for m in raw["manifests"]] == [i.manifest.digest for i in result.images]
    missing = run("skopeo", "--override-arch", "s390x", "inspect", f"oci:{tmp_path}:3.20", ok=False)
    assert missing.returncode != 0 and "s390x" in missing.stderr


# ---------------------------------------------------------------- umoci


@needs_umoci
def test_umoci_unpack_reproduces_the_tree(layout: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    umoci_unpack(f"{layout}:3.20", bundle)
    assert_rootfs_matches_tree(bundle / "rootfs", small_tree())
    runtime = json.loads((bundle / "config.json").read_text())
    assert runtime["process"]["args"] == ["/bin/sh", "-c", "echo hi"]


@needs_umoci
def test_umoci_unpacks_each_platform_tag_of_a_multi_arch_layout(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    write_oci_layout(layout, [image_spec(small_tree()), image_spec(small_tree(), "aarch64")],
                     tag="3.20")
    listed = run("umoci", "ls", "--layout", str(layout)).stdout.split()
    assert listed == ["3.20", "3.20-x86_64", "3.20-aarch64"]
    umoci_unpack(f"{layout}:3.20-aarch64", tmp_path / "arm")
    assert_rootfs_matches_tree(tmp_path / "arm" / "rootfs", small_tree())


@needs_umoci
@needs_skopeo
def test_tools_accept_a_layout_with_an_sbom_artifact(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    write_oci_layout(layout, [image_spec(small_tree())], tag="3.20",
                     artifacts=[OciArtifact("x86_64", "application/spdx+json", b'{"a":1}')])
    verify_oci_layout(layout)
    umoci_unpack(f"{layout}:3.20", tmp_path / "bundle")
    assert skopeo_json("inspect", f"oci:{layout}:3.20")["Architecture"] == "amd64"


@needs_umoci
def test_umoci_and_verifier_reject_changed_layer_bytes(layout: Path, tmp_path: Path) -> None:
    _, manifest = single_manifest(layout)
    path = blob_path(layout, manifest["layers"][0]["digest"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(Exception, match="has content hashing to"):
        verify_oci_layout(layout)
    proc = umoci_unpack(f"{layout}:3.20", tmp_path / "bundle", ok=False)
    assert proc.returncode != 0, proc.stderr


@needs_umoci
def test_umoci_and_verifier_reject_a_wrong_size(layout: Path, tmp_path: Path) -> None:
    def grow(m: dict[str, object]) -> None:
        m["layers"][0]["size"] += 7  # type: ignore[index]

    replace_manifest(layout, grow)
    with pytest.raises(Exception, match="does not match descriptor size"):
        verify_oci_layout(layout)
    proc = umoci_unpack(f"{layout}:3.20", tmp_path / "bundle", ok=False)
    assert proc.returncode != 0, proc.stderr


@needs_umoci
def test_umoci_and_verifier_reject_a_wrong_diff_id(layout: Path, tmp_path: Path) -> None:
    def lie(c: dict[str, object]) -> None:
        c["rootfs"]["diff_ids"] = ["sha256:" + "cd" * 32]  # type: ignore[index]

    replace_config(layout, lie)
    with pytest.raises(Exception, match="but the config's diff_id is sha256:cdcd"):
        verify_oci_layout(layout)
    proc = umoci_unpack(f"{layout}:3.20", tmp_path / "bundle", ok=False)
    assert proc.returncode != 0, proc.stderr
    assert "diff" in proc.stderr.lower() or "digest" in proc.stderr.lower(), proc.stderr


# ---------------------------------------------------------------- real Alpine minirootfs


@needs_umoci
@pytest.mark.skipif(not MINIROOTFS.is_file(),
                    reason=f"real Alpine fixtures not found at {MINIROOTFS} (needs ../shared)")
def test_real_minirootfs_round_trips_through_umoci(tmp_path: Path) -> None:
    tree = FileTree()
    with MINIROOTFS.open("rb") as fh:
        load_tar(fh, tree, source=MINIROOTFS.name)
    layout = tmp_path / "layout"
    write_oci_layout(layout, [image_spec(tree)], tag="3.20.3")
    verify_oci_layout(layout)
    bundle = tmp_path / "bundle"
    umoci_unpack(f"{layout}:3.20.3", bundle)
    rootfs = bundle / "rootfs"
    checked = 0
    with tarfile.open(MINIROOTFS) as tf:
        members = [m for m in tf.getmembers() if m.name not in (".", "./")]
        for member in members:
            rel = member.name.removeprefix("./").rstrip("/")
            st = os.lstat(rootfs / rel)
            assert stat.S_IMODE(st.st_mode) == member.mode or member.issym(), rel
            if IS_ROOT:
                assert (st.st_uid, st.st_gid) == (member.uid, member.gid), rel
            if member.isdir():
                assert stat.S_ISDIR(st.st_mode), rel
            elif member.issym():
                assert os.readlink(rootfs / rel) == member.linkname, rel
            elif member.islnk():
                target = os.lstat(rootfs / member.linkname.removeprefix("./"))
                assert st.st_ino == target.st_ino, rel
            else:
                assert member.isfile(), rel
                expected = tf.extractfile(member).read()  # type: ignore[union-attr]
                assert (rootfs / rel).read_bytes() == expected, rel
            checked += 1
    on_disk = {str(p.relative_to(rootfs)) for p in rootfs.rglob("*")}
    assert on_disk == {m.name.removeprefix("./").rstrip("/") for m in members}
    assert checked == 517


@needs_skopeo
def test_build_twice_same_digest_seen_by_skopeo(tmp_path: Path) -> None:
    digests = []
    for name in ("a", "b"):
        write_oci_layout(tmp_path / name, [image_spec(small_tree())], tag="t")
        digests.append(skopeo_json("inspect", f"oci:{tmp_path / name}:t")["Digest"])
    assert digests[0] == digests[1]
