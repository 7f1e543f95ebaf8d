"""Properties of the pure parsers over arbitrary input: they answer or raise ArchiveError, nothing else."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from composer.apk.db import parse_installed, parse_triggers, parse_world
from composer.apk.depends import Dependency, parse_dependency
from composer.apk.index import PackageInfo, format_apkindex, parse_apkindex
from composer.apk.package import parse_pkginfo
from composer.apk.version import Version, compare_versions, is_valid_version
from composer.errors import ArchiveError

_version_chars = st.text(alphabet="0123456789.abcz_-~rpe¹٣", max_size=30)
_numbers = st.integers(0, 10**30).map(str) | st.text(alphabet="0123456789", min_size=1,
                                                     max_size=5000)
_valid_versions = st.builds(
    lambda parts, letter, suffix, rev: ".".join(parts) + letter + suffix + rev,
    st.lists(_numbers, min_size=1, max_size=4),
    st.sampled_from(["", "a", "z"]),
    st.sampled_from(["", "_alpha", "_pre2", "_rc1", "_p3", "_git20240101"]),
    st.sampled_from(["", "-r0", "-r12"]) | _numbers.map(lambda n: "-r" + n),
)


@settings(max_examples=300, deadline=None)
@given(_version_chars | _valid_versions, _version_chars | _valid_versions)
def test_version_comparison_is_total_and_antisymmetric(a: str, b: str) -> None:
    assert compare_versions(a, b) == -compare_versions(b, a)
    assert compare_versions(a, a) == 0
    assert (Version(a) < Version(b)) == (compare_versions(a, b) < 0)
    if compare_versions(a, b) == 0:
        assert hash(Version(a)) == hash(Version(b)) or not (is_valid_version(a)
                                                            and is_valid_version(b))


@given(_valid_versions)
def test_generated_versions_are_valid(v: str) -> None:
    assert is_valid_version(v)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.booleans(), st.booleans())
def test_any_dependency_text_parses_or_fails_cleanly(text: str, strict: bool, tag: bool) -> None:
    try:
        dep = parse_dependency(text, source="s", strict=strict, allow_tag=tag)
    except ArchiveError as exc:
        assert "\n" not in str(exc)
        return
    assert parse_dependency(dep.format(), source="s", strict=strict, allow_tag=tag) == dep


_names = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,15}", fullmatch=True)
_deps = st.builds(Dependency, name=_names, op=st.sampled_from(["", "=", ">=", "<", "~"]),
                  version=_valid_versions, conflict=st.booleans()).map(
    lambda d: Dependency(d.name, d.op, d.version if d.op else None, d.conflict))


@given(st.lists(st.builds(
    PackageInfo, name=_names, version=_valid_versions,
    checksum=st.none() | st.just("Q1" + "A" * 27 + "="),
    size=st.none() | st.integers(0, 2**63), installed_size=st.none() | st.integers(0, 2**40),
    description=st.none() | st.text(alphabet="abc XYZ()-.", min_size=1, max_size=30),
    depends=st.lists(_deps, max_size=3).map(tuple), provides=st.lists(_deps, max_size=2).map(tuple),
    provider_priority=st.none() | st.integers(0, 1000)), max_size=4))
def test_index_records_round_trip(packages: list[PackageInfo]) -> None:
    text = format_apkindex(packages)
    assert list(parse_apkindex(text, source="i").packages) == packages
    assert format_apkindex(parse_apkindex(text, source="i").packages) == text


_record_lines = st.lists(
    st.sampled_from("CPVASITULomtckDpirqFRMaZ#x ") .flatmap(
        lambda letter: st.text(max_size=25).map(lambda value: f"{letter}:{value}"))
    | st.just("") | st.text(max_size=10), max_size=12).map(lambda lines: "\n".join(lines))


@settings(max_examples=300, deadline=None)
@given(_record_lines | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_record_parsers_answer_or_raise_archive_errors(text: str) -> None:
    for parse in (lambda d: parse_apkindex(d, source="i"), parse_installed, parse_world,
                  parse_triggers, lambda d: parse_pkginfo(d.replace(b":", b" = "), source="p")):
        for data in (text.encode("utf-8", "surrogatepass"), text.encode("latin-1", "replace")):
            try:
                parse(data)
            except ArchiveError as exc:
                assert "\n" not in str(exc)
