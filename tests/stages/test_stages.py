"""The stages called in-process against the file:// test mirror: plan, fetch, compose,
outputs and build(ctx), each checked on what it returns."""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from composer.manifest import MANIFEST_NAME, SUMS_NAME
from composer.profile.model import output_formats
from composer.stages.base import fetch_base, fetch_release_key, load_base_tree, read_base
from composer.stages.compose import compose_arch
from composer.stages.outputs import NOT_YET, OUTPUT_KINDS, output_kind
from composer.stages.pipeline import build, fetch, open_fetcher
from composer.stages.plan import plan_arch
from tests.conftest import write_profile
from tests.helpers.apkrepo import build_repository
from tests.helpers.apkrepo import signing_key as apk_signing_key
from tests.helpers.gpg import SigningKey
from tests.helpers.mirror import MINIROOTFS_MTIME, MirrorInfo, build_mirror, minirootfs_without_world
from tests.stages.conftest import ContextFor
from tests.test_cli_packages import HELLO


@pytest.fixture
def package_profile(tmp_path: Path, signing_key: SigningKey) -> Path:
    """A profile installing ``hello`` from a signed file:// repository over a minirootfs."""
    mirror = build_mirror(tmp_path / "pmirror", key=signing_key, tarball=minirootfs_without_world())
    repo = build_repository(tmp_path / "repo", HELLO, apk_signing_key())
    key = apk_signing_key()
    folder = tmp_path / "pk"
    folder.mkdir()
    (folder / key.name).write_bytes(key.public_pem)
    return write_profile(folder, mirror_url=mirror.file_url, key=signing_key, name="pk",
                         packages=["hello"], repositories=[repo.as_uri()],
                         keys=[{"file": key.name, "sha256": key.public_sha256}],
                         services={"default": []},
                         accounts={"users": [{"name": "ops", "uid": 1200}]},
                         overlay={"hostname": "pk"})


def tree_state(tree: object) -> dict[str, tuple[object, ...]]:
    return {p: (e.type, e.mode, e.uid, e.gid, e.mtime, e.target,
                e.blob.sha256 if e.blob is not None else None)
            for p, e in tree.entries.items()}  # type: ignore[attr-defined]


def test_every_format_has_a_row_or_says_what_it_needs() -> None:
    formats = set(output_formats())
    assert formats == set(OUTPUT_KINDS) | set(NOT_YET)
    assert not set(OUTPUT_KINDS) & set(NOT_YET)


def test_plan_reads_and_never_changes_the_base(package_profile: Path, context_for: ContextFor,
                                               signing_key: SigningKey) -> None:
    ctx = context_for(package_profile)
    fetcher = open_fetcher(ctx)
    key = fetch_release_key(ctx, fetcher)
    assert key is not None and key.fingerprint.upper() == signing_key.fingerprint
    mini = fetch_base(ctx, fetcher, key, "x86_64")
    assert mini is not None and mini.version == "3.20.3"
    with load_base_tree(mini) as tree:
        before = tree_state(tree)
        plan = plan_arch(ctx, fetcher, "x86_64", mini, read_base(tree, trust_tree_keys=True))
        assert tree_state(tree) == before
    assert (plan.arch, plan.release, plan.minirootfs) == ("x86_64", "3.20.3", mini)
    assert plan.packages is not None
    assert sorted(p.name for p in plan.packages.packages) == ["hello", "libhello", "musl"]
    assert [p.name for p in plan.packages.wanted] == [p.name for p in plan.packages.packages]
    assert plan.packages.world == ("hello",)
    assert plan.packages.epoch == max(MINIROOTFS_MTIME, max(
        p.build_time or 0 for p in plan.packages.packages))
    with pytest.raises(FrozenInstanceError):
        plan.release = "x"  # type: ignore[misc]
    # Only metadata and the minirootfs were fetched: no package yet.
    assert {i.role for i in fetcher.inputs} == {"release-key", "metadata", "signature",
                                                "minirootfs", "apkindex"}


def test_fetch_downloads_without_composing(package_profile: Path, context_for: ContextFor,
                                           logs: list[str]) -> None:
    ctx = context_for(package_profile)
    inputs = fetch(ctx)
    kinds = [i.kind for i in inputs]
    assert kinds.count("package") == 3 and kinds.count("apkindex") == 1
    assert kinds[:5] == ["release-key", "metadata", "metadata", "signature", "minirootfs"]
    mini = next(i for i in inputs if i.kind == "minirootfs")
    assert (mini.arch, mini.name) == ("x86_64", "alpine-minirootfs-3.20.3-x86_64.tar.gz")
    assert not any("overlay" in line or "installing" in line for line in logs)
    assert not ctx.output_dir.exists()
    for record in inputs:
        blob = ctx.cache_dir / "blobs" / "sha256" / record.sha256
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == record.sha256


def test_compose_returns_the_composed_tree(package_profile: Path, context_for: ContextFor) -> None:
    ctx = context_for(package_profile)
    fetcher = open_fetcher(ctx)
    mini = fetch_base(ctx, fetcher, fetch_release_key(ctx, fetcher), "x86_64")
    with load_base_tree(mini) as tree:
        plan = plan_arch(ctx, fetcher, "x86_64", mini, read_base(tree, trust_tree_keys=True))
        composed = compose_arch(ctx, fetcher, plan, tree)
        assert composed.tree is tree
        assert composed.packages == ("hello-2.1-r3", "libhello-1.0-r0", "musl-1.2.4-r0")
        assert composed.system_changes == ("user ops uid 1200 gid 1200",)
        assert [s["script"] for s in composed.scripts_not_run] == ["pre-install"]
        assert tree.read_file("etc/hostname") == b"pk\n"
        assert b"ops:x:1200:1200:" in tree.read_file("etc/passwd")


def test_build_in_process(tmp_path: Path, workdir: Path, mirror: MirrorInfo,
                          signing_key: SigningKey, context_for: ContextFor) -> None:
    profile = write_profile(workdir, mirror_url=mirror.file_url, key=signing_key,
                            overlay={"files": [{"path": "/etc/motd", "content": "hi\n"}]},
                            outputs=[{"format": "tar"}, {"format": "tar", "compression": "none"},
                                     {"format": "oci-archive"}])
    ctx = context_for(profile)
    result = build(ctx)
    folder = ctx.output_dir / "test"
    assert result.output_dir == folder
    assert sorted(p.name for p in folder.iterdir()) == [
        SUMS_NAME, "lock.json", MANIFEST_NAME, "provenance.intoto.json", "test-3.20.3-x86_64.tar",
        "test-3.20.3-x86_64.tar.gz",
        "test-3.20.3.oci.tar"]
    assert (folder / MANIFEST_NAME).read_bytes() == result.manifest.to_json()
    for record in result.outputs:
        assert hashlib.sha256((folder / record.path).read_bytes()).hexdigest() == record.sha256
    with tarfile.open(folder / "test-3.20.3-x86_64.tar") as tf:
        assert tf.extractfile("./etc/motd").read() == b"hi\n"  # type: ignore[union-attr]
        assert {m.mtime for m in tf} == {MINIROOTFS_MTIME}
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert manifest["epoch_source"] == "inputs"
    assert sorted({i["kind"] for i in manifest["inputs"]}) == [
        "metadata", "minirootfs", "release-key", "signature"]
    assert not [p for p in ctx.output_dir.iterdir() if p.name.startswith(".")]


def test_a_failed_output_leaves_nothing(tmp_path: Path, workdir: Path, mirror: MirrorInfo,
                                        signing_key: SigningKey, context_for: ContextFor) -> None:
    profile = write_profile(workdir, mirror_url=mirror.file_url, key=signing_key,
                            overlay={"remove": ["/etc/nonexistent"]})
    ctx = context_for(profile)
    with pytest.raises(Exception, match="overlay.remove: /etc/nonexistent does not exist"):
        build(ctx)
    assert not ctx.output_dir.exists() or list(ctx.output_dir.iterdir()) == []
    assert output_kind(ctx, "tar") is not None


def test_plan_packages_takes_any_requested_set(package_profile: Path, context_for: ContextFor) -> None:
    from composer.stages.plan import plan_packages

    ctx = context_for(package_profile)
    fetcher = open_fetcher(ctx)
    mini = fetch_base(ctx, fetcher, fetch_release_key(ctx, fetcher), "x86_64")
    with load_base_tree(mini) as tree:
        base = read_base(tree, trust_tree_keys=True)
    plan = plan_packages(ctx, fetcher, "x86_64", "v3.20", base, ["libhello", "hello-doc"])
    assert plan.world == ("libhello", "hello-doc")
    # Not the profile's 'hello': only what was asked for and what it needs.
    assert sorted(p.name for p in plan.packages) == ["hello-doc", "libhello", "musl"]
