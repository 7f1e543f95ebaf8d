"""Profile loading: extends, path rebasing, variants, errors, digest, schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from composer.errors import ProfileError
from composer.profile import load_profile
from composer.profile.load import merge_profiles
from composer.profile.model import Profile


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_extends_merges_mappings_and_replaces_lists(tmp_path: Path) -> None:
    write(tmp_path / "base" / "base.yaml", """
name: base
packages: [curl, jq]
trust: {allow_unsigned: true}
keys: [keys/repo.rsa.pub]
overlay:
  hostname: base
  tree: rootfs
  files: [{path: /etc/motd, source: files/motd}]
config: {env: {A: "1"}, user: nobody}
""")
    child = write(tmp_path / "images" / "web" / "web.yaml", """
extends: ../../base/base.yaml
name: web
packages: [nginx]
overlay: {hostname: web}
config: {env: {B: "2"}}
""")
    loaded = load_profile(child)
    p = loaded.profile
    assert p.name == "web"
    assert p.packages == ["nginx"]  # lists replace
    assert p.trust.allow_unsigned is True  # mappings merge
    assert p.overlay.hostname == "web"
    assert p.config.env == {"A": "1", "B": "2"} and p.config.user == "nobody"
    # relative paths keep pointing where the parent meant, re-expressed from the child
    assert p.keys == ["../../base/keys/repo.rsa.pub"]
    assert p.overlay.tree == ["../../base/rootfs"]
    assert p.overlay.files[0].source == "../../base/files/motd"
    assert loaded.resolve(p.overlay.tree[0]) == (tmp_path / "base" / "rootfs").resolve()
    assert [f.name for f in loaded.files] == ["web.yaml", "base.yaml"]


def test_extends_loop_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "extends: b.yaml\nname: a\n")
    write(tmp_path / "b.yaml", "extends: a.yaml\nname: b\n")
    with pytest.raises(ProfileError, match=r"'extends' loops back on itself"):
        load_profile(tmp_path / "a.yaml")


def test_missing_parent_and_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"extends: 'nope.yaml' does not exist"):
        load_profile(write(tmp_path / "a.yaml", "extends: nope.yaml\nname: a\n"))
    with pytest.raises(ProfileError, match=r"no such profile file"):
        load_profile(tmp_path / "absent.yaml")
    with pytest.raises(ProfileError, match=r"a profile must be a mapping of keys, not list"):
        load_profile(write(tmp_path / "l.yaml", "- a\n- b\n"))


def test_variant_presets_fill_only_missing_keys() -> None:
    virt = Profile.model_validate({"name": "v", "variant": "virt"})
    assert virt.packages == ["alpine-base", "linux-virt", "syslinux", "gummiboot"]
    assert [o.format for o in virt.outputs] == ["iso"]
    assert [f.path for f in virt.overlay.files] == ["/etc/inittab"]
    # Mappings are filled key by key: the profile's hostname and the variant's inittab.
    named = Profile.model_validate({"name": "v", "variant": "virt",
                                    "overlay": {"hostname": "vm"}})
    assert named.overlay.hostname == "vm" and [f.path for f in named.overlay.files] == [
        "/etc/inittab"]
    mine = Profile.model_validate({"name": "v", "variant": "standard", "overlay": {
        "files": [{"path": "/etc/motd", "content": "hi"}]}})
    assert [f.path for f in mine.overlay.files] == ["/etc/motd"]
    own = Profile.model_validate({"name": "v", "variant": "virt", "packages": ["x"],
                                  "outputs": [{"format": "tar"}]})
    assert own.packages == ["x"] and [o.format for o in own.outputs] == ["tar"]
    edge = Profile.model_validate({"name": "e", "variant": "edge"})
    assert edge.branch == "edge"


def test_digest_is_stable_and_content_based(tmp_path: Path) -> None:
    a = load_profile(write(tmp_path / "one" / "p.yaml", "name: x\narch: x86_64\n"))
    b = load_profile(write(tmp_path / "two" / "p.yaml", "arch: [x86_64]\nname: x\n"))
    c = load_profile(write(tmp_path / "three" / "p.yaml", "name: x\narch: aarch64\n"))
    assert a.digest == b.digest != c.digest
    # golden: what the profile sets, normalised; a new option or default leaves it alone
    assert a.digest == "2840a1c5fb77bdc5a46253bc7da04d6588fd883ed6840b63722da036dba05c99"
    d = load_profile(write(tmp_path / "four" / "p.yaml", "name: x\narch: x86_64\n"
                           "mirror: file:///srv/alpine\n"))
    e = load_profile(write(tmp_path / "five" / "p.yaml", "name: x\narch: x86_64\n"
                           "outputs: [{format: tar}]\n"))
    assert d.digest == a.digest  # the build mirror is not what is built
    assert e.digest != a.digest and e.profile.outputs == a.profile.outputs  # set, not default


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "name: x\nmirror: https://example.org/alpine\n")
    loaded = load_profile(path, overrides={"mirror": "file:///srv/mirror/"})
    assert loaded.profile.mirror == "file:///srv/mirror"


def test_a_mirror_override_takes_repository_urls_under_the_profile_mirror_along(
        tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "name: x\nmirror: https://example.org/alpine/\n"
                 "repositories: [main, https://example.org/alpine/v3.20/community,\n"
                 "  '@t https://example.org/alpine/edge/testing', https://example.org/alpinex/r,\n"
                 "  https://other.org/repo]\n")
    loaded = load_profile(path, overrides={"mirror": "http://127.0.0.1:1/m"})
    assert [(r.url, r.tag) for r in loaded.profile.repositories or []] == [
        ("main", None), ("http://127.0.0.1:1/m/v3.20/community", None),
        ("http://127.0.0.1:1/m/edge/testing", "t"), ("https://example.org/alpinex/r", None),
        ("https://other.org/repo", None)]
    unchanged = load_profile(path).profile.repositories or []
    assert unchanged[1].url == "https://example.org/alpine/v3.20/community"


def test_merge_profiles_is_pure() -> None:
    parent = {"a": {"b": 1, "c": [1]}, "d": 1}
    child = {"a": {"c": [2]}, "e": 2}
    assert merge_profiles(parent, child) == {"a": {"b": 1, "c": [2]}, "d": 1, "e": 2}
    assert parent == {"a": {"b": 1, "c": [1]}, "d": 1}


def test_schema_is_strict_everywhere() -> None:
    schema = Profile.model_json_schema()
    assert schema["additionalProperties"] is False
    for name, definition in schema["$defs"].items():
        if definition.get("type") == "object":
            assert definition.get("additionalProperties") is False, name


def test_shipped_profiles_are_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "profiles"
    names = sorted(p.name for p in root.glob("*.yaml"))
    assert names == ["container.yaml", "edge.yaml", "minirootfs.yaml", "standard.yaml", "virt.yaml"]
    for path in root.glob("*.yaml"):
        assert load_profile(path).profile.name == path.stem
