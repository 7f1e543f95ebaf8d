"""OCI layout, OCI archive and docker-archive writers, and the layout verifier (no external tools)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from composer.errors import NotSupportedError, OutputError, VerificationError
from composer.tree import FileTree
from composer.verify_oci import verify_oci_layout
from composer.writers.oci import (
    ALPINE_PATH,
    OciArtifact,
    OciImageSpec,
    Platform,
    canonical_json,
    image_annotations,
    platform_for_arch,
    write_oci_layout,
)
from composer.writers.oci_archive import write_docker_archive, write_oci_archive
from composer.writers.tar import LAYER_STYLE, write_tar
from tests.helpers.tools import extract_trusted

from .oci_trees import (
    CREATED,
    blob_path,
    golden_tree,
    read_json,
    replace_config,
    replace_manifest,
    single_manifest,
    small_tree,
)


def spec(tree: FileTree, arch: str = "x86_64", **kw: object) -> OciImageSpec:
    return OciImageSpec(tree=tree, arch=arch, created=CREATED, tool_version="0.1.0", **kw)  # type: ignore[arg-type]


def full_spec(tree: FileTree, arch: str = "x86_64") -> OciImageSpec:
    return spec(tree, arch, entrypoint=["/bin/sh", "-c"], cmd=["echo hi"],
                env={"PATH": ALPINE_PATH, "LANG": "C.UTF-8"}, labels={"org.example.team": "os"},
                working_dir="/root", user="1000:1000", exposed_ports=["22/tcp", "53/udp"],
                volumes=["/data"], stop_signal="SIGTERM", history_comment="profile demo")


# ---------------------------------------------------------------- platforms


def test_platform_map_matches_spec_table() -> None:
    assert {a: str(platform_for_arch(a)) for a in
            ("x86_64", "x86", "aarch64", "armv7", "armhf", "ppc64le", "s390x", "riscv64",
             "loongarch64")} == {
        "x86_64": "linux/amd64", "x86": "linux/386", "aarch64": "linux/arm64/v8",
        "armv7": "linux/arm/v7", "armhf": "linux/arm/v6", "ppc64le": "linux/ppc64le",
        "s390x": "linux/s390x", "riscv64": "linux/riscv64", "loongarch64": "linux/loong64"}
    assert platform_for_arch("armv7").as_json() == {"architecture": "arm", "os": "linux",
                                                    "variant": "v7"}


def test_unknown_arch_is_not_supported() -> None:
    with pytest.raises(NotSupportedError, match=r"Alpine architecture 'mips64' has no OCI platform"):
        platform_for_arch("mips64")


def test_annotations_only_given_fields() -> None:
    assert image_annotations(version="3.20.3", base_digest=None, created=0) == {
        "org.opencontainers.image.version": "3.20.3",
        "org.opencontainers.image.created": "1970-01-01T00:00:00Z"}
    with pytest.raises(ValueError, match="colour"):
        image_annotations(colour="red")


# ---------------------------------------------------------------- single-arch layout


def test_single_arch_layout_structure(tmp_path: Path) -> None:
    annotations = image_annotations(version="3.20.3", source="https://example.org/repo")
    result = write_oci_layout(tmp_path, [full_spec(small_tree())], tag="3.20",
                              annotations=annotations)
    assert (tmp_path / "oci-layout").read_bytes() == b'{"imageLayoutVersion":"1.0.0"}'
    index_bytes = (tmp_path / "index.json").read_bytes()
    assert "sha256:" + hashlib.sha256(index_bytes).hexdigest() == result.index_json_digest
    index = json.loads(index_bytes)
    assert index_bytes == canonical_json(index)
    image = result.images[0]
    assert index == {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": image.manifest.digest, "size": image.manifest.size,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {**annotations, "org.opencontainers.image.ref.name": "3.20"}}]}
    assert result.image == image.manifest
    manifest = read_json(blob_path(tmp_path, image.manifest.digest))
    layer = image.layers[0]
    assert manifest == {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": image.config.digest, "size": image.config.size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer.descriptor.digest, "size": layer.descriptor.size}],
        "annotations": {"org.opencontainers.image.created": "2023-11-14T22:13:20Z",
                        **annotations}}
    config = read_json(blob_path(tmp_path, image.config.digest))
    assert config == {
        "architecture": "amd64", "os": "linux", "created": "2023-11-14T22:13:20Z",
        "config": {"Env": [f"PATH={ALPINE_PATH}", "LANG=C.UTF-8"],
                   "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"], "WorkingDir": "/root",
                   "User": "1000:1000", "Labels": {"org.example.team": "os"},
                   "ExposedPorts": {"22/tcp": {}, "53/udp": {}}, "Volumes": {"/data": {}},
                   "StopSignal": "SIGTERM"},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "alpine-composer 0.1.0",
                     "comment": "profile demo"}]}
    on_disk = sorted(p.name for p in (tmp_path / "blobs" / "sha256").iterdir())
    assert on_disk == sorted(d.digest.split(":")[1] for d in result.blobs)
    assert len(on_disk) == 3


def test_layer_is_the_layer_style_tar_and_diff_id_is_its_sha256(tmp_path: Path) -> None:
    tree = small_tree()
    result = write_oci_layout(tmp_path, [spec(tree)], tag="t")
    layer = result.images[0].layers[0]
    stored = blob_path(tmp_path, layer.descriptor.digest).read_bytes()
    assert "sha256:" + hashlib.sha256(stored).hexdigest() == layer.descriptor.digest
    assert len(stored) == layer.descriptor.size
    expected = io.BytesIO()
    write_tar(tree, expected, mtime=CREATED, style=LAYER_STYLE)
    raw = gzip.decompress(stored)
    assert raw == expected.getvalue()
    assert layer.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert layer.uncompressed_size == len(raw)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        members = {m.name: m for m in tf.getmembers()}
    assert "" not in members and "." not in members and not any(n.startswith("./") for n in members)
    assert members["bin/su"].mode == 0o4755
    assert members["tmp"].mode == 0o1777
    assert (members["home/user"].uid, members["home/user"].gid) == (1000, 1000)
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "/bin/busybox"
    assert members["usr/lib/libz.so.1.3.1"].islnk()
    assert members["usr/lib/libz.so.1.3.1"].linkname == "usr/lib/libz.so.1"
    assert {m.mtime for m in members.values()} == {CREATED}


def test_default_env_is_alpine_path(tmp_path: Path) -> None:
    result = write_oci_layout(tmp_path, [spec(golden_tree())], tag="t")
    config = read_json(blob_path(tmp_path, result.images[0].config.digest))
    assert config["config"] == {"Env": [f"PATH={ALPINE_PATH}"]}
    assert "variant" not in config


@pytest.mark.parametrize("compression,media_type", [
    ("zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
    ("none", "application/vnd.oci.image.layer.v1.tar"),
])
def test_other_layer_compressions(tmp_path: Path, compression: str, media_type: str) -> None:
    tree = small_tree()
    result = write_oci_layout(tmp_path, [spec(tree, compression=compression)], tag="t")
    layer = result.images[0].layers[0]
    assert layer.descriptor.media_type == media_type
    stored = blob_path(tmp_path, layer.descriptor.digest).read_bytes()
    raw = (zstandard.ZstdDecompressor().decompressobj().decompress(stored)
           if compression == "zstd" else stored)
    assert layer.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    if compression == "none":
        assert layer.diff_id == layer.descriptor.digest
    verify_oci_layout(tmp_path)


def test_xz_layers_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NotSupportedError, match="layer compression 'xz' is not an OCI layer type"):
        write_oci_layout(tmp_path, [spec(golden_tree(), compression="xz")], tag="t")


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="no platform images"):
        write_oci_layout(tmp_path, [], tag="t")
    with pytest.raises(OutputError, match="the image tag is empty"):
        write_oci_layout(tmp_path, [spec(golden_tree())], tag="")
    with pytest.raises(OutputError, match="'x86_64' and 'x86_64' both map to platform linux/amd64"):
        write_oci_layout(tmp_path, [spec(golden_tree()), spec(golden_tree())], tag="t")


# ---------------------------------------------------------------- determinism


def test_two_builds_are_byte_identical(tmp_path: Path) -> None:
    first = write_oci_layout(tmp_path / "a", [full_spec(small_tree())], tag="3.20")
    second = write_oci_layout(tmp_path / "b", [full_spec(small_tree())], tag="3.20")
    assert first == second
    files_a = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").rglob("*")
               if p.is_file()}
    files_b = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in (tmp_path / "b").rglob("*")
               if p.is_file()}
    assert files_a == files_b


def test_golden_digests(tmp_path: Path) -> None:
    """Any byte change in tar, JSON or the layout shape changes these; update them on purpose."""
    plain = write_oci_layout(tmp_path / "plain", [spec(golden_tree(), compression="none")],
                             tag="golden")
    assert plain.images[0].layers[0].diff_id == (
        "sha256:4b2a90007ab96aa105389887790222c1900b821522153afbff6f543cbef892cb")
    assert plain.images[0].manifest.digest == (
        "sha256:5510e31e1a298cf125f1ddf6a3296ea0074d9cd2c2642e5e76d8b070dc948c7b")
    assert plain.index_json_digest == (
        "sha256:ba8d4674635f8e34bd24e529eda7e471fe1cc5948e3995cbe01c0181e5ae3611")
    gz = write_oci_layout(tmp_path / "gz", [spec(golden_tree())], tag="golden")
    assert gz.images[0].layers[0].diff_id == plain.images[0].layers[0].diff_id
    assert gz.images[0].layers[0].descriptor.digest == (
        "sha256:c997a5fcfd5a380dc40023468dfa3fe26ce399955b231559d798e45da156e86b")
    assert gz.index_json_digest == (
        "sha256:05825baf9fef419c4c529de0b80b2d4030a061a7c90db8b7fd954265a22358f5")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.dictionaries(
    st.text(alphabet="abcxyz-_.é", min_size=1, max_size=12).filter(lambda s: s not in (".", "..")),
    st.tuples(st.binary(max_size=300), st.sampled_from([0o644, 0o755, 0o4755, 0o600])),
    max_size=8))
def test_any_tree_gives_a_verifiable_layout(tmp_path_factory: pytest.TempPathFactory,
                                            files: dict[str, tuple[bytes, int]]) -> None:
    tree = FileTree()
    for name, (data, mode) in files.items():
        tree.add_file(f"d/{name}", data, mode=mode)
    layout = tmp_path_factory.mktemp("any")
    result = write_oci_layout(layout, [spec(tree)], tag="t")
    referenced = verify_oci_layout(layout)
    assert referenced == sorted(d.digest for d in result.blobs)


# ---------------------------------------------------------------- multi-arch and artifacts


def test_multi_arch_nested_index(tmp_path: Path) -> None:
    result = write_oci_layout(tmp_path, [spec(small_tree()), spec(small_tree(), "aarch64"),
                                         spec(small_tree(), "armv7")], tag="3.20")
    index = read_json(tmp_path / "index.json")
    nested_desc = index["manifests"][0]
    assert nested_desc == {"mediaType": "application/vnd.oci.image.index.v1+json",
                           "digest": result.image.digest, "size": result.image.size,
                           "annotations": {"org.opencontainers.image.ref.name": "3.20"}}
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"][1:]] \
        == ["3.20-x86_64", "3.20-aarch64", "3.20-armv7"]
    nested = read_json(blob_path(tmp_path, result.image.digest))
    assert [m["platform"] for m in nested["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
        {"architecture": "arm", "os": "linux", "variant": "v7"}]
    assert [m["digest"] for m in nested["manifests"]] == [i.manifest.digest for i in result.images]
    # Identical trees share one layer blob; configs differ by architecture.
    assert len({i.layers[0].descriptor.digest for i in result.images}) == 1
    assert len({i.config.digest for i in result.images}) == 3
    assert [i.platform for i in result.images] == [Platform("amd64"), Platform("arm64", "v8"),
                                                   Platform("arm", "v7")]
    verify_oci_layout(tmp_path)


def test_sbom_artifact_refers_to_its_image(tmp_path: Path) -> None:
    sbom = b'{"spdxVersion":"SPDX-2.3"}'
    result = write_oci_layout(
        tmp_path, [spec(small_tree()), spec(small_tree(), "aarch64")], tag="t",
        artifacts=[OciArtifact("aarch64", "application/spdx+json", sbom)])
    arm = result.images[1]
    assert result.images[0].artifacts == ()
    (artifact_desc,) = arm.artifacts
    index = read_json(tmp_path / "index.json")
    assert index["manifests"][-1] == {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": artifact_desc.digest, "size": artifact_desc.size,
        "artifactType": "application/spdx+json"}
    artifact = read_json(blob_path(tmp_path, artifact_desc.digest))
    assert artifact["artifactType"] == "application/spdx+json"
    assert artifact["subject"] == {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                   "digest": arm.manifest.digest, "size": arm.manifest.size}
    empty_json = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    assert artifact["config"] == {"mediaType": "application/vnd.oci.empty.v1+json",
                                  "digest": empty_json, "size": 2}
    assert blob_path(tmp_path, artifact["layers"][0]["digest"]).read_bytes() == sbom
    verify_oci_layout(tmp_path)
    with pytest.raises(OutputError, match="artifact 'application/spdx\\+json' is for architecture 'x86'"):
        write_oci_layout(tmp_path / "x", [spec(small_tree())], tag="t",
                         artifacts=[OciArtifact("x86", "application/spdx+json", sbom)])


# ---------------------------------------------------------------- verifier


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    write_oci_layout(tmp_path, [full_spec(small_tree())], tag="t")
    return tmp_path


def test_verifier_accepts_a_good_layout(layout: Path) -> None:
    assert len(verify_oci_layout(layout)) == 3


def test_verifier_catches_changed_layer_bytes(layout: Path) -> None:
    _, manifest = single_manifest(layout)
    digest = manifest["layers"][0]["digest"]
    path = blob_path(layout, digest)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    actual = hashlib.sha256(data).hexdigest()
    with pytest.raises(VerificationError) as info:
        verify_oci_layout(layout)
    assert str(info.value) == (f"blob {digest} (manifest {replace_digest(layout)} layers[0]) "
                               f"has content hashing to sha256:{actual}")


def replace_digest(layout: Path) -> str:
    desc, _ = single_manifest(layout)
    return str(desc["digest"])


def test_verifier_catches_wrong_descriptor_size(layout: Path) -> None:
    _, manifest = single_manifest(layout)
    layer = manifest["layers"][0]

    def grow(m: dict[str, object]) -> None:
        m["layers"][0]["size"] += 1  # type: ignore[index]

    new_manifest = replace_manifest(layout, grow)
    with pytest.raises(VerificationError) as info:
        verify_oci_layout(layout)
    assert str(info.value) == (
        f"blob {layer['digest']} (manifest {new_manifest} layers[0]) size {layer['size']} "
        f"does not match descriptor size {layer['size'] + 1}")


def test_verifier_catches_wrong_diff_id(layout: Path) -> None:
    _, manifest = single_manifest(layout)
    layer = manifest["layers"][0]["digest"]
    real = read_json(blob_path(layout, manifest["config"]["digest"]))["rootfs"]["diff_ids"][0]
    bogus = "sha256:" + "ab" * 32

    def lie(c: dict[str, object]) -> None:
        c["rootfs"]["diff_ids"] = [bogus]  # type: ignore[index]

    replace_config(layout, lie)
    with pytest.raises(VerificationError) as info:
        verify_oci_layout(layout)
    assert str(info.value) == (f"layer {layer} (manifest {replace_digest(layout)} layers[0]) "
                               f"uncompresses to {real}, but the config's diff_id is {bogus}")


def test_verifier_catches_missing_blob_and_bad_json(layout: Path) -> None:
    desc, manifest = single_manifest(layout)
    config = blob_path(layout, manifest["config"]["digest"])
    config.unlink()
    missing = rf"blob {manifest['config']['digest']} \(manifest {desc['digest']} config\) is missing"
    with pytest.raises(VerificationError, match=missing):
        verify_oci_layout(layout)
    (layout / "index.json").write_text("{not json")
    with pytest.raises(VerificationError, match="index.json: not valid JSON"):
        verify_oci_layout(layout)
    (layout / "oci-layout").unlink()
    with pytest.raises(VerificationError, match="oci-layout file is missing"):
        verify_oci_layout(layout)


def test_verifier_catches_truncated_gzip(tmp_path: Path) -> None:
    write_oci_layout(tmp_path, [spec(small_tree())], tag="t")
    _, manifest = single_manifest(tmp_path)
    path = blob_path(tmp_path, manifest["layers"][0]["digest"])
    data = path.read_bytes()[:-20]
    digest = write_json_blob_for(tmp_path, data)

    def point(m: dict[str, object]) -> None:
        m["layers"][0].update(digest)  # type: ignore[index]

    replace_manifest(tmp_path, point)
    with pytest.raises(VerificationError, match="truncated gzip stream"):
        verify_oci_layout(tmp_path)


def write_json_blob_for(layout: Path, data: bytes) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blob_path(layout, digest).write_bytes(data)
    return {"digest": digest, "size": len(data)}


# ---------------------------------------------------------------- archives


def test_oci_archive_is_a_sorted_deterministic_tar_of_the_layout(layout: Path, tmp_path: Path) -> None:
    first, second = io.BytesIO(), io.BytesIO()
    size = write_oci_archive(layout, first, mtime=CREATED)
    write_oci_archive(layout, second, mtime=CREATED)
    assert first.getvalue() == second.getvalue()
    assert size == len(first.getvalue()) and size % 10240 == 0
    first.seek(0)
    with tarfile.open(fileobj=first) as tf:
        members = tf.getmembers()
        blobs = sorted(p.name for p in (layout / "blobs" / "sha256").iterdir())
        assert [m.name for m in members] == (
            ["blobs", "blobs/sha256"] + [f"blobs/sha256/{b}" for b in blobs]
            + ["index.json", "oci-layout"])
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(CREATED, 0, 0, "", "")}
        assert {m.name: m.mode for m in members if m.isdir()} == {"blobs": 0o755, "blobs/sha256": 0o755}
        assert {m.mode for m in members if m.isfile()} == {0o644}
        out = tmp_path / "unpacked"
        extract_trusted(tf, out, filter="data")
    assert verify_oci_layout(out) == verify_oci_layout(layout)


def test_docker_archive_members_and_manifest(tmp_path: Path) -> None:
    tree = small_tree()
    out = io.BytesIO()
    write_docker_archive([full_spec(tree)], out, tag="example/alpine:3.20")
    again = io.BytesIO()
    write_docker_archive([full_spec(small_tree())], again, tag="example/alpine:3.20")
    assert out.getvalue() == again.getvalue()
    out.seek(0)
    with tarfile.open(fileobj=out) as tf:
        names = tf.getnames()
        manifest = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
        (entry,) = manifest
        layer = tf.extractfile(entry["Layers"][0]).read()  # type: ignore[union-attr]
        config_bytes = tf.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
        repositories = json.loads(tf.extractfile("repositories").read())  # type: ignore[union-attr]
    expected_layer = io.BytesIO()
    write_tar(tree, expected_layer, mtime=CREATED, style=LAYER_STYLE)
    assert layer == expected_layer.getvalue()
    layer_hex = hashlib.sha256(layer).hexdigest()
    config_hex = hashlib.sha256(config_bytes).hexdigest()
    assert entry == {"Config": f"{config_hex}.json", "RepoTags": ["example/alpine:3.20"],
                     "Layers": [f"{layer_hex}/layer.tar"]}
    assert names == [f"{layer_hex}", f"{layer_hex}/layer.tar", f"{config_hex}.json",
                     "manifest.json", "repositories"]
    assert json.loads(config_bytes)["rootfs"]["diff_ids"] == [f"sha256:{layer_hex}"]
    assert repositories == {"example/alpine": {"3.20": layer_hex}}


def test_docker_archive_refuses_multi_arch_and_bad_tags() -> None:
    two = r"holds a single platform, but the image has 2 \(x86_64, aarch64\)"
    with pytest.raises(NotSupportedError, match=two):
        write_docker_archive([spec(golden_tree()), spec(golden_tree(), "aarch64")], io.BytesIO(),
                             tag="a:b")
    with pytest.raises(OutputError, match="tag 'alpine' must look like NAME:TAG"):
        write_docker_archive([spec(golden_tree())], io.BytesIO(), tag="alpine")


def test_verifier_catches_truncated_zstd(tmp_path: Path) -> None:
    write_oci_layout(tmp_path, [spec(small_tree(), compression="zstd")], tag="t")
    _, manifest = single_manifest(tmp_path)
    data = blob_path(tmp_path, manifest["layers"][0]["digest"]).read_bytes()[:-8]
    digest = write_json_blob_for(tmp_path, data)

    def point(m: dict[str, object]) -> None:
        m["layers"][0].update(digest)  # type: ignore[index]

    replace_manifest(tmp_path, point)
    with pytest.raises(VerificationError, match="truncated zstd stream"):
        verify_oci_layout(tmp_path)
