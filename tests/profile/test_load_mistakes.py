"""Profile mistakes a new user makes are named where they are: the file of an extends chain
that holds the mistake, numbers YAML read for strings, paths listed twice, a missing name."""

from __future__ import annotations

from pathlib import Path

import pytest

from composer.errors import ProfileError
from composer.profile import load_profile


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_error_in_a_parent_names_the_parent_and_the_chain(tmp_path: Path) -> None:
    write(tmp_path / "base" / "root.yaml", "name: root\noverlay:\n  hostname: 'bad host'\n")
    write(tmp_path / "base" / "mid.yaml", "extends: root.yaml\nname: mid\n")
    child = write(tmp_path / "child.yaml", "extends: base/mid.yaml\nname: child\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(child)
    assert str(caught.value) == (
        f"{tmp_path / 'base' / 'root.yaml'}: overlay.hostname: String should match "
        "pattern '^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$' (got 'bad host') "
        f"(in the extends chain of {child})")


def test_error_in_the_child_names_the_child(tmp_path: Path) -> None:
    write(tmp_path / "root.yaml", "name: root\n")
    child = write(tmp_path / "child.yaml", "extends: root.yaml\nname: child\nvariant: nope\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(child)
    assert str(caught.value).startswith(f"{child}: variant: ")
    assert "extends chain" not in str(caught.value)


def test_a_child_must_name_itself(tmp_path: Path) -> None:
    write(tmp_path / "root.yaml", "name: root\n")
    child = write(tmp_path / "child.yaml", "extends: root.yaml\npackages: [curl]\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(child)
    assert str(caught.value) == (f"{child}: name: required in a profile that extends another "
                                 "(without it the build would write into 'root''s output folder)")


def test_branch_read_as_a_number_gets_a_hint(tmp_path: Path) -> None:
    profile = write(tmp_path / "p.yaml", "name: p\nbranch: 3.20\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(profile)
    assert str(caught.value) == (f"{profile}: branch: YAML read 3.2 as a number: write the branch "
                                 "as a string with a 'v', e.g. v3.2 (got 3.2)")


def test_the_same_path_twice_in_overlay_files_is_refused(tmp_path: Path) -> None:
    profile = write(tmp_path / "p.yaml", "name: p\noverlay:\n  files:\n"
                    "    - {path: /etc/motd, content: a}\n    - {path: /etc//motd, content: b}\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(profile)
    assert str(caught.value) == f"{profile}: overlay: files: /etc/motd is listed twice"


@pytest.mark.parametrize(("written", "mode"), [("644", 0o644), ("0644", 0o644), ("755", 0o755),
                                               ("'0600'", 0o600), ("4755", 0o4755)])
def test_yaml_modes_are_octal_as_users_mean(tmp_path: Path, written: str, mode: int) -> None:
    profile = write(tmp_path / "p.yaml", "name: p\noverlay:\n  files:\n"
                    f"    - {{path: /etc/motd, content: a, mode: {written}}}\n")
    assert load_profile(profile).profile.overlay.files[0].mode == mode


def test_a_decimal_looking_mode_is_refused(tmp_path: Path) -> None:
    profile = write(tmp_path / "p.yaml", "name: p\noverlay:\n  files:\n"
                    "    - {path: /etc/motd, content: a, mode: 493}\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(profile)
    assert str(caught.value) == (f"{profile}: overlay.files[0].mode: 493 is not an octal mode: "
                                 "write modes in octal, e.g. '0644' (got 493)")


def test_duplicate_keys_name_both_lines(tmp_path: Path) -> None:
    profile = write(tmp_path / "p.yaml", "name: p\noverlay:\n  hostname: a\noverlay:\n  hostname: b\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(profile)
    assert str(caught.value) == f"{profile}:4: duplicate key 'overlay' (first at line 2)"


@pytest.mark.parametrize(("field", "value"), [
    ("name", "web\n"), ("branch", "v3.20\n"), ("release", "3.20.3\n"),
    ("accounts", {"root": {"password": "$6$composertest$1ZP0zzqHsX26v.IrfHoaygET9jMBuFLD67e37jJX"
                                        "Hpg2efxelyTvkvDXHpNkB3i6gbpP1TAc2OZC/KwXFUJ.V0\n"}}),
])
def test_a_trailing_newline_is_not_part_of_a_valid_value(tmp_path: Path, field: str,
                                                           value: object) -> None:
    """`$` in a regular expression also matches before a final newline: a name, branch,
    release or password hash with one would reach file names, URLs and /etc/shadow."""
    import json

    data: dict[str, object] = {"name": "web", field: value}
    with pytest.raises(ProfileError) as info:
        load_profile(write(tmp_path / "p.yaml", json.dumps(data)))
    assert field in str(info.value)
