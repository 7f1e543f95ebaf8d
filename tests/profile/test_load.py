"""Profile loading: extends, path rebasing, variants, errors, digest, schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from composer.errors import ProfileError
from composer.profile import load_profile
from composer.profile.layers import merge_layers
from composer.profile.model import Profile
from composer.profile.variants import NETWORK_INTERFACES


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_extends_merges_mappings_and_name_lists(tmp_path: Path) -> None:
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
packages: [nginx, -jq]
overlay: {hostname: web}
config: {env: {B: "2"}}
""")
    loaded = load_profile(child)
    p = loaded.profile
    assert p.name == "web"
    assert p.packages == ["curl", "nginx"]  # names accumulate, '-jq' removes the parent's
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


MACHINE_FILES = ["/etc/inittab", "/etc/inittab", "/etc/network/interfaces"]


def test_variant_presets_fill_missing_keys_and_merge_lists() -> None:
    virt = Profile.model_validate({"name": "v", "variant": "virt"})
    assert virt.packages == ["alpine-base"]
    assert [o.format for o in virt.outputs] == ["iso"]
    assert [f.path for f in virt.overlay.files] == MACHINE_FILES
    assert virt.services == {
        "sysinit": ["devfs", "dmesg", "mdev", "hwdrivers"],
        "boot": ["hwclock", "modules", "sysctl", "hostname", "bootmisc", "syslog", "networking"],
        "default": ["acpid", "crond"], "shutdown": ["mount-ro", "killprocs", "savecache"]}
    # Mappings are filled key by key: the profile's hostname and the variant's inittab.
    named = Profile.model_validate({"name": "v", "variant": "virt",
                                    "overlay": {"hostname": "vm"}})
    assert named.overlay.hostname == "vm" and [f.path for f in named.overlay.files] == \
        MACHINE_FILES
    # One file of the profile's is added to the preset's; a file at the same path replaces it.
    mine = Profile.model_validate({"name": "v", "variant": "standard", "overlay": {
        "files": [{"path": "/etc/motd", "content": "hi"},
                  {"path": "/etc/inittab", "content": "::sysinit:/bin/true\n"}]}})
    assert [(f.path, f.content) for f in mine.overlay.files] == [
        ("/etc/network/interfaces", NETWORK_INTERFACES), ("/etc/motd", "hi"),
        ("/etc/inittab", "::sysinit:/bin/true\n")]
    own = Profile.model_validate({"name": "v", "variant": "virt", "packages": ["x"],
                                  "outputs": [{"format": "tar"}]})
    assert own.packages == ["alpine-base", "x"] and [o.format for o in own.outputs] == ["tar"]
    edge = Profile.model_validate({"name": "e", "variant": "edge"})
    assert edge.branch == "edge"


def test_services_of_the_preset_survive_one_added_service() -> None:
    """README's own example, services: {default: [sshd]}, keeps the variant's runlevels."""
    p = Profile.model_validate({"name": "v", "variant": "virt", "packages": ["openssh"],
                                "services": {"default": ["sshd", "chronyd"]}})
    assert p.services["sysinit"] == ["devfs", "dmesg", "mdev", "hwdrivers"]
    assert p.services["default"] == ["acpid", "crond", "sshd", "chronyd"]


def test_sshd_comes_with_openssh_and_can_be_removed() -> None:
    without = Profile.model_validate({"name": "v", "variant": "virt"})
    assert "sshd" not in without.services["default"]
    for name in ("openssh", "openssh-server", "openssh-server>=9"):
        p = Profile.model_validate({"name": "v", "variant": "standard", "packages": [name]})
        assert p.services["default"] == ["acpid", "crond", "sshd"], name
    off = Profile.model_validate({"name": "v", "variant": "virt", "packages": ["openssh"],
                                  "services": {"default": ["-sshd"]}})
    assert off.services["default"] == ["acpid", "crond"]


def test_a_profile_removes_preset_items_explicitly() -> None:
    p = Profile.model_validate({
        "name": "v", "variant": "virt", "packages": ["-alpine-base", "busybox"],
        "services": {"default": ["-crond"], "shutdown": ["-savecache"]},
        "overlay": {"files": ["-/etc/network/interfaces", "-/etc/inittab"]}})
    assert p.packages == ["busybox"]
    assert p.services["default"] == ["acpid"]
    assert p.services["shutdown"] == ["mount-ro", "killprocs"]
    assert p.overlay.files == []


@pytest.mark.parametrize(("fields", "message"), [
    ({"packages": ["-nope"]}, "packages: '-nope' removes nothing: no lower layer (the variant's "
                              "preset or a profile this one extends) lists 'nope'"),
    ({"services": {"boot": ["-sshd"]}}, "services.boot: '-sshd' removes nothing"),
    ({"overlay": {"files": ["-/etc/motd"]}}, "overlay.files: '-/etc/motd' removes nothing"),
    ({"overlay": {"symlinks": ["-/bin/x"]}}, "overlay.symlinks: '-/bin/x' removes nothing"),
    ({"overlay": {"directories": ["-/srv"]}}, "overlay.directories: '-/srv' removes nothing"),
])
def test_a_removal_that_removes_nothing_is_an_error(tmp_path: Path, fields: dict[str, Any],
                                                    message: str) -> None:
    path = write(tmp_path / "p.yaml", yaml.safe_dump({"name": "v", "variant": "virt", **fields}))
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_layers_of_an_extends_chain_follow_the_preset_rules(tmp_path: Path) -> None:
    """The parent removes a preset package and file, the child puts the package back and
    adds its own; the removal in the parent was written against the preset below both."""
    write(tmp_path / "base.yaml", """
name: base
variant: virt
packages: [-alpine-base, busybox, curl]
services: {default: [-crond]}
overlay: {files: [-/etc/network/interfaces, {path: /etc/motd, content: parent}]}
""")
    child = write(tmp_path / "child.yaml", """
extends: base.yaml
name: child
packages: [alpine-base, -curl]
overlay: {files: [{path: /etc/motd, content: child}]}
""")
    p = load_profile(child).profile
    assert p.packages == ["busybox", "alpine-base"]
    assert p.services["default"] == ["acpid"]
    assert [(f.path, f.content) for f in p.overlay.files if f.path != "/etc/inittab"] == [
        ("/etc/motd", "child")]


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


def test_merge_layers_is_pure() -> None:
    parent = {"a": {"b": 1, "c": [1]}, "d": 1, "packages": ["x"]}
    child = {"a": {"c": [2]}, "e": 2, "packages": ["y"]}
    assert merge_layers(parent, child) == {"a": {"b": 1, "c": [2]}, "d": 1, "e": 2,
                                           "packages": ["x", "y"]}
    assert parent == {"a": {"b": 1, "c": [1]}, "d": 1, "packages": ["x"]}


def test_schema_is_strict_everywhere() -> None:
    schema = Profile.model_json_schema()
    assert schema["additionalProperties"] is False
    for name, definition in schema["$defs"].items():
        if definition.get("type") == "object":
            assert definition.get("additionalProperties") is False, name


def test_shipped_profiles_are_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "profiles"
    names = sorted(p.name for p in root.glob("*.yaml"))
    assert names == ["container.yaml", "edge.yaml", "minirootfs.yaml", "standard.yaml",
                     "virt-disk.yaml", "virt.yaml"]
    for path in root.glob("*.yaml"):
        assert load_profile(path).profile.name == path.stem
