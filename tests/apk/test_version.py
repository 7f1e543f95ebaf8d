"""Version ordering checked against apk-tools' published comparison facts."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from composer.apk.version import Version, compare_versions, is_valid_version, version_matches

_SIGN = {"<": -1, "=": 0, ">": 1}


def _load_pairs() -> list[tuple[str, int, str]]:
    """Each line of version_chains.txt is ``v0 op v1 op v2 ...``; every
    neighbouring pair is one expected comparison."""
    pairs: list[tuple[str, int, str]] = []
    for line in (Path(__file__).parent / "version_chains.txt").read_text().splitlines():
        words = line.split()
        for i in range(0, len(words) - 2, 2):
            pairs.append((words[i], _SIGN[words[i + 1]], words[i + 2]))
    return sorted(set(pairs))


PAIRS = _load_pairs()


def test_table_is_large() -> None:
    assert len(PAIRS) >= 600


@pytest.mark.parametrize(("a", "expected", "b"), PAIRS)
def test_compare_table(a: str, expected: int, b: str) -> None:
    assert compare_versions(a, b) == expected
    assert compare_versions(b, a) == -expected


@pytest.mark.parametrize(
    "text",
    ["1.2", "0.1_pre2", "0.1_p1_pre2", "0.1_git20240101_pre1", "1.2c", "1.2_alpha1",
     "0.1_alpha1_pre2", "0.1_pre2~1234abcd", "1.2-r0", "2.14.0-r5", "1.2.4_git20230717-r4",
     "20230506-r0", "0", "007", "1.0~1234-r1", "9.6_p1-r0"],
)
def test_valid(text: str) -> None:
    assert is_valid_version(text)


@pytest.mark.parametrize(
    "text",
    ["0.1bc", "0.1a1", "0.1a.1", "0.1_foobar", "0.1-r", "0.1-r2_pre1", "0.1-r2.1", ".1", "a",
     "_pre1", "0.1_", "", "1.", "1..2", "1.2-r1-r2", "1.2~", "1.2~XYZ", "1.2-1", "1.2_Pre1",
     "1.2A", "1.2 ", " 1.2", "1.2~ab~cd", "1.2-r1~ab", "v1.2"],
)
def test_invalid(text: str) -> None:
    assert not is_valid_version(text)


@pytest.mark.parametrize(
    ("version", "op", "target", "expected"),
    [
        ("3.6.0", "~", "3.6", True),
        ("3.6_pre1", "~", "3.6", True),
        ("3.6.9_p1", "~", "3.6", True),
        ("3.6", "~", "3.6", True),
        ("3.8", "~", "3.8.1", False),
        ("3.60", "~", "3.6", False),
        ("3.5", "<~", "3.6", True),
        ("3.6.2", "<~", "3.6", True),
        ("3.7", "<~", "3.6", False),
        ("3.7", ">~", "3.6", True),
        ("3.6.1", ">~", "3.6", True),
        ("3.5", ">~", "3.6", False),
        ("1.2-r1", "~=", "1.2", True),
        ("1.2-r1", "=", "1.2-r1", True),
        ("1.2-r1", "=", "1.2", False),
        ("1.2", ">=", "1.2", True),
        ("1.2", ">", "1.2", False),
        ("1.2_rc1", "<", "1.2", True),
        ("1.2", "<=", "1.2_p1", True),
        ("anything", "", "1", True),
        ("1.2.4_git20230717-r4", ">=", "1.2.3_git20230424", True),
    ],
)
def test_version_matches(version: str, op: str, target: str, expected: bool) -> None:
    assert version_matches(version, op, target) is expected


def test_version_matches_rejects_unknown_operator() -> None:
    with pytest.raises(ValueError, match="operator '=>'"):
        version_matches("1", "=>", "1")


# A hand-ordered list: every earlier entry sorts strictly before every later one.
ORDERED = [
    "0", "0.0.1", "0.01", "0.1_alpha", "0.1_alpha1", "0.1_beta", "0.1_pre", "0.1_pre1_p1",
    "0.1_rc", "0.1", "0.1-r0", "0.1-r1", "0.1_cvs", "0.1_svn", "0.1_git20200101",
    "0.1_hg", "0.1_p1", "0.1_p2-r3", "0.1a", "0.1b", "0.1.0", "0.1.01", "0.1.1", "0.1.9",
    "0.1.10", "0.2", "1.0_alpha_pre", "1.0_alpha", "1.0_rc1~ab", "1.0", "1.0-r1", "1.0~1234",
    "1.0~1234-r1", "1.0.0", "1.00", "1.02", "1.1", "1.9", "1.10", "2",
    "2.0.0_rc1", "2.0.0", "10", "20230506-r0",
]


def test_ordered_list_all_pairs() -> None:
    for (i, a), (j, b) in itertools.combinations_with_replacement(enumerate(ORDERED), 2):
        expected = (i > j) - (i < j)
        assert compare_versions(a, b) == expected, (a, b)
        assert compare_versions(b, a) == -expected, (b, a)


def test_sorting_shuffled_list_restores_order() -> None:
    shuffled = ORDERED[::-1][1::2] + ORDERED[::-1][0::2]
    assert sorted(shuffled, key=Version) == ORDERED


def test_version_wrapper_equality_and_hash() -> None:
    assert Version("007") == Version("7")
    assert hash(Version("007")) == hash(Version("7"))
    assert Version("1.0a") != Version("1.0b")
    assert len({Version("1.2-r0"), Version("1.2-r00"), Version("1.2-r1")}) == 2


_number = st.integers(min_value=0, max_value=30).map(str) | st.sampled_from(["0", "00", "01", "007", "10"])
_suffix = st.tuples(
    st.sampled_from(["alpha", "beta", "pre", "rc", "cvs", "svn", "git", "hg", "p"]),
    st.one_of(st.just(""), _number),
).map(lambda t: "_" + t[0] + t[1])
valid_versions = st.builds(
    lambda first, parts, letter, suffixes, hash_, rev: (
        first + "".join("." + p for p in parts) + letter + "".join(suffixes) + hash_ + rev
    ),
    st.integers(min_value=0, max_value=20).map(str),
    st.lists(_number, max_size=3),
    st.sampled_from(["", "", "", "a", "b", "z"]),
    st.lists(_suffix, max_size=2),
    st.sampled_from(["", "", "", "~0a", "~ff", "~1234"]),
    st.one_of(st.just(""), st.integers(min_value=0, max_value=12).map(lambda n: f"-r{n}")),
)
any_text = st.text(alphabet="0123456789.abprz_-~", max_size=10)


@given(valid_versions)
def test_generated_versions_are_valid(v: str) -> None:
    assert is_valid_version(v)


@given(valid_versions | any_text)
def test_reflexive(v: str) -> None:
    assert compare_versions(v, v) == 0


@given(valid_versions | any_text, valid_versions | any_text)
def test_antisymmetric(a: str, b: str) -> None:
    assert compare_versions(a, b) == -compare_versions(b, a)


@settings(max_examples=300)
@given(valid_versions, valid_versions, valid_versions)
def test_transitive(a: str, b: str, c: str) -> None:
    x, y, z = sorted([a, b, c], key=Version)
    assert compare_versions(x, y) <= 0
    assert compare_versions(y, z) <= 0
    assert compare_versions(x, z) <= 0
    if compare_versions(x, y) == 0 and compare_versions(y, z) == 0:
        assert compare_versions(x, z) == 0


@given(st.lists(valid_versions, min_size=2, max_size=8))
def test_sort_is_consistent_with_pairwise_compare(versions: list[str]) -> None:
    ordered = sorted(versions, key=Version)
    for a, b in itertools.combinations(ordered, 2):
        assert compare_versions(a, b) <= 0


@given(valid_versions, valid_versions)
def test_equal_versions_hash_equal(a: str, b: str) -> None:
    if compare_versions(a, b) == 0:
        assert hash(Version(a)) == hash(Version(b))
