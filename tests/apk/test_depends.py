"""Dependency atoms: parsing, formatting and matching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from composer.apk.depends import (
    Dependency,
    _parse_atom,
    format_dependencies,
    parse_dependencies,
    parse_dependency,
)
from composer.errors import ArchiveError, ProfileError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busybox", Dependency("busybox")),
        ("busybox=1.36.1-r15", Dependency("busybox", "=", "1.36.1-r15")),
        ("musl>=1.2.3_git20230424", Dependency("musl", ">=", "1.2.3_git20230424")),
        ("foo>1", Dependency("foo", ">", "1")),
        ("foo<2", Dependency("foo", "<", "2")),
        ("foo<=2", Dependency("foo", "<=", "2")),
        ("foo~1.6", Dependency("foo", "~", "1.6")),
        ("foo~=1.6", Dependency("foo", "~=", "1.6")),
        ("foo<~1.6", Dependency("foo", "<~", "1.6")),
        ("foo>~1.6", Dependency("foo", ">~", "1.6")),
        ("foo><Q1AYNx2pLOAHRYZQgv3nM8TNtvRWY=", Dependency("foo", "><", "Q1AYNx2pLOAHRYZQgv3nM8TNtvRWY=")),
        ("!foo", Dependency("foo", conflict=True)),
        ("!foo<2", Dependency("foo", "<", "2", conflict=True)),
        ("foo@edge", Dependency("foo", tag="edge")),
        ("foo@edge>=2", Dependency("foo", ">=", "2", tag="edge")),
        ("so:libc.musl-x86_64.so.1", Dependency("so:libc.musl-x86_64.so.1")),
        ("so:libz.so.1=1.3.1", Dependency("so:libz.so.1", "=", "1.3.1")),
        ("cmd:sh=1.36.1-r15", Dependency("cmd:sh", "=", "1.36.1-r15")),
        ("pc:zlib", Dependency("pc:zlib")),
        ("/bin/sh", Dependency("/bin/sh")),
        ("py3.11:setuptools", Dependency("py3.11:setuptools")),
        ("libstdc++", Dependency("libstdc++")),
        ("opensmtpd=6.8.0p2-r4", Dependency("opensmtpd", "=", "6.8.0p2-r4")),
    ],
)
def test_parse_and_round_trip(text: str, expected: Dependency) -> None:
    dep = parse_dependency(text, source="test")
    assert dep == expected
    assert dep.format() == text
    assert str(dep) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "test: invalid dependency '': missing package name"),
        ("!", "test: invalid dependency '!': missing package name"),
        (">=1", "test: invalid dependency '>=1': missing package name"),
        ("foo=>1", "test: invalid dependency 'foo=>1': unknown operator '=>'"),
        ("foo>=", "test: invalid dependency 'foo>=': operator '>=' without a version"),
        ("foo@", "test: invalid dependency 'foo@': empty or malformed repository tag"),
        ("fo o", "test: invalid dependency 'fo o': package name contains characters apk does not allow"),
        ("foo*", "test: invalid dependency 'foo*': package name contains characters apk does not allow"),
    ],
)
def test_errors_name_the_source(text: str, message: str) -> None:
    with pytest.raises(ArchiveError) as info:
        parse_dependency(text, source="test")
    assert str(info.value) == message


def test_strict_mode_checks_versions_and_uses_error_class() -> None:
    with pytest.raises(ProfileError) as info:
        parse_dependency("foo=1.0bc", source="profile.yaml: packages[2]", error_cls=ProfileError, strict=True)
    assert str(info.value) == (
        "profile.yaml: packages[2]: invalid dependency 'foo=1.0bc': '1.0bc' is not a valid Alpine version"
    )
    # Index data is lenient: real Alpine indexes carry such versions.
    assert parse_dependency("foo=1.0bc", source="x").version == "1.0bc"


def test_index_names_may_hold_an_exclamation_mark_as_apk_reads_them() -> None:
    """The real v3.19 community index: kdevelop provides ``cmd:kdevelop!`` (a command)."""
    assert parse_dependency("cmd:kdevelop!=23.08.4-r0", source="APKINDEX") == Dependency(
        "cmd:kdevelop!", "=", "23.08.4-r0")
    with pytest.raises(ProfileError, match="package name contains characters apk does not allow"):
        parse_dependency("cmd:kdevelop!", source="p", error_cls=ProfileError, strict=True)


@given(st.text(alphabet="ab1.-_:/!<>=~@ ", max_size=12), st.booleans())
def test_the_one_match_path_reads_index_atoms_as_the_long_way(text: str, allow_tag: bool) -> None:
    def outcome(parse: object) -> object:
        try:
            return parse(text, source="x", error_cls=ArchiveError, strict=False,  # type: ignore[operator]
                         allow_tag=allow_tag)
        except ArchiveError as exc:
            return str(exc)

    assert outcome(parse_dependency) == outcome(_parse_atom)


def test_tags_can_be_forbidden() -> None:
    with pytest.raises(ArchiveError, match="a repository tag"):
        parse_dependency("foo@edge", source="APKINDEX", allow_tag=False)


def test_parse_dependencies_splits_on_spaces_and_newlines() -> None:
    deps = parse_dependencies("alpine-base\nbusybox  so:libz.so.1=1.3\n", source="world")
    assert [d.format() for d in deps] == ["alpine-base", "busybox", "so:libz.so.1=1.3"]
    assert format_dependencies(deps) == "alpine-base busybox so:libz.so.1=1.3"


@pytest.mark.parametrize(
    ("atom", "version", "expected"),
    [
        ("foo", "1", True),
        ("foo", None, True),
        ("foo>=2", "2.0", True),
        ("foo>=2", "1.9", False),
        ("foo>=2", None, False),
        ("foo<2", "1.9", True),
        ("foo=1.2-r0", "1.2-r0", True),
        ("foo=1.2-r0", "1.2-r1", False),
        ("foo~1.6", "1.6.5", True),
        ("foo~1.6", "1.7", False),
        ("!foo", "1", False),
        ("!foo", None, False),
        ("!foo<2", "1", False),
        ("!foo<2", "3", True),
        ("!foo<2", None, True),
    ],
)
def test_satisfied_by(atom: str, version: str | None, expected: bool) -> None:
    assert parse_dependency(atom, source="t").satisfied_by(version) is expected


def test_checksum_operator_matches_identity() -> None:
    dep = parse_dependency("foo><Q1abc=", source="t")
    assert dep.satisfied_by("1.0", checksum="Q1abc=")
    assert not dep.satisfied_by("1.0", checksum="Q1xyz=")
    assert not dep.satisfied_by("1.0")


_names = st.from_regex(r"[a-z][a-z0-9._+-]{0,8}(:[a-z0-9._-]{1,6})?", fullmatch=True)
_versions = st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3}){0,2}(_rc[0-9])?(-r[0-9])?", fullmatch=True)


@given(_names, st.sampled_from(["", "=", "<", "<=", ">", ">=", "~", "<~", ">~"]), _versions,
       st.booleans(), st.sampled_from([None, "edge", "testing"]))
def test_format_parse_round_trip(name: str, op: str, version: str, conflict: bool, tag: str | None) -> None:
    dep = Dependency(name, op, version if op else None, conflict, tag)
    assert parse_dependency(dep.format(), source="t", strict=True) == dep
