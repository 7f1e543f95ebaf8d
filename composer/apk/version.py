"""Alpine package version parsing and ordering, as apk-tools compares them.

The grammar is ``number{.number}...{letter}{_suffix{number}}...{~hash}{-r#}``.
Ordering follows apk-tools 3 (``src/version.c``): a numeric part after a dot
that starts with ``0`` (on either side) is compared as a string, Gentoo-style,
so ``8.2.0 < 8.2.001`` and ``1.02 < 1.1``.  Invalid strings are not rejected:
they compare by the position at which they stop being valid, which is what
apk does with the odd versions it meets in the wild.  The apk-tools 2.14
tokenizer differs only for such leading-zero parts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "Version",
    "compare_versions",
    "is_valid_version",
    "version_matches",
    "VALID_OPERATORS",
    "operator_mask",
    "MASK_EQUAL",
    "MASK_LESS",
    "MASK_GREATER",
    "MASK_FUZZY",
]

MASK_EQUAL = 1
MASK_LESS = 2
MASK_GREATER = 4
MASK_FUZZY = 8

# Operators accepted in dependency atoms.  "~=" is the spelling abuild used for
# "~"; "<~"/">~" come from apk-tools 3; "><" compares a package checksum.
VALID_OPERATORS: frozenset[str] = frozenset(
    {"<", "<=", "=", ">=", ">", "~", "~=", "<~", ">~", "><"}
)

_UINT64 = 1 << 64


class _Tok(IntEnum):
    # The numeric order matters: the end-of-comparison rule ranks token kinds.
    INITIAL_DIGIT = 0
    DIGIT = 1
    LETTER = 2
    SUFFIX = 3
    SUFFIX_NO = 4
    COMMIT_HASH = 5
    REVISION_NO = 6
    END = 7
    INVALID = 8


_SUFFIX_NONE = 5
_SUFFIXES: dict[str, int] = {
    "alpha": 1, "beta": 2, "pre": 3, "rc": 4,
    "cvs": 6, "svn": 7, "git": 8, "hg": 9, "p": 10,
}
_DIGITS = frozenset("0123456789")
_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class _Token:
    """One piece of a version string (a number, a letter, a suffix, a hash …)."""

    kind: _Tok
    text: str = ""
    number: int = 0


def _uint64(digits: str) -> int:
    """The value of an ASCII digit run modulo 2**64, for runs of any length.

    ``int()`` refuses more than 4,300 digits; folding 18 digits at a time is
    linear and gives the same residue.
    """
    value = 0
    for start in range(0, len(digits), 18):
        part = digits[start:start + 18]
        value = (value * 10 ** len(part) + int(part)) % _UINT64
    return value


def _span(s: str, i: int, allowed: frozenset[str]) -> int:
    while i < len(s) and s[i] in allowed:
        i += 1
    return i


@functools.lru_cache(maxsize=65536)
def _tokens(s: str) -> tuple[_Token, ...]:
    """Split a version into tokens, ending with one END or INVALID token."""
    out: list[_Token] = []
    end = _span(s, 0, _DIGITS)
    if end == 0:
        return (_Token(_Tok.INVALID),)
    out.append(_Token(_Tok.INITIAL_DIGIT, s[:end], _uint64(s[:end])))
    i = end
    kind = _Tok.INITIAL_DIGIT
    while True:
        if i == len(s):
            out.append(_Token(_Tok.END))
            return tuple(out)
        c = s[i]
        if c in _LOWER and kind <= _Tok.DIGIT:
            kind = _Tok.LETTER
            out.append(_Token(kind, c, ord(c)))
            i += 1
            continue
        if (c == "." and kind <= _Tok.DIGIT) or (c in _DIGITS and kind == _Tok.SUFFIX):
            start = i + 1 if c == "." else i
            end = _span(s, start, _DIGITS)
            if end == start:
                break
            kind = _Tok.DIGIT if c == "." else _Tok.SUFFIX_NO
            out.append(_Token(kind, s[start:end], _uint64(s[start:end])))
            i = end
            continue
        if c == "_" and kind <= _Tok.SUFFIX_NO:
            end = _span(s, i + 1, _LOWER)
            value = _SUFFIXES.get(s[i + 1:end])
            if value is None:
                break
            kind = _Tok.SUFFIX
            out.append(_Token(kind, s[i + 1:end], value))
            i = end
            continue
        if c == "~" and kind < _Tok.COMMIT_HASH:
            end = _span(s, i + 1, _HEX)
            if end == i + 1:
                break
            kind = _Tok.COMMIT_HASH
            out.append(_Token(kind, s[i + 1:end]))
            i = end
            continue
        if c == "-" and kind < _Tok.REVISION_NO and s.startswith("-r", i):
            end = _span(s, i + 2, _DIGITS)
            if end == i + 2:
                break
            kind = _Tok.REVISION_NO
            out.append(_Token(kind, s[i + 2:end], _uint64(s[i + 2:end])))
            i = end
            continue
        break
    out.append(_Token(_Tok.INVALID))
    return tuple(out)


def _token_cmp(a: _Token, b: _Token) -> int:
    if a.kind == _Tok.DIGIT and (a.text.startswith("0") or b.text.startswith("0")):
        return (a.text > b.text) - (a.text < b.text)
    if a.kind == _Tok.COMMIT_HASH:
        return (a.text > b.text) - (a.text < b.text)
    return (a.number > b.number) - (a.number < b.number)


def _compare(a: str, b: str, fuzzy: bool = False) -> int:
    ta, tb = _tokens(a), _tokens(b)
    i = 0
    while True:
        x, y = ta[i], tb[i]
        if x.kind != y.kind or x.kind >= _Tok.END:
            break
        r = _token_cmp(x, y)
        if r:
            return r
        i += 1
    if x.kind == y.kind:
        return 0
    if fuzzy and y.kind == _Tok.END:
        return 0
    # A pre-release suffix makes the longer version the smaller one.
    if x.kind == _Tok.SUFFIX and x.number < _SUFFIX_NONE:
        return -1
    if y.kind == _Tok.SUFFIX and y.number < _SUFFIX_NONE:
        return 1
    return -1 if x.kind > y.kind else 1


def compare_versions(a: str, b: str) -> int:
    """Return -1, 0 or 1 as version ``a`` sorts before, equal to or after ``b``."""
    return _compare(a, b)


def is_valid_version(s: str) -> bool:
    """True if ``s`` follows the Alpine version grammar completely."""
    return _tokens(s)[-1].kind == _Tok.END


def operator_mask(op: str) -> int:
    """The apk result mask of a dependency operator ("" means any version)."""
    if op == "":
        return MASK_EQUAL | MASK_LESS | MASK_GREATER
    mask = 0
    for c in op:
        if c == "<":
            mask |= MASK_LESS
        elif c == ">":
            mask |= MASK_GREATER
        elif c == "=":
            mask |= MASK_EQUAL
        elif c == "~":
            mask |= MASK_FUZZY | MASK_EQUAL
        else:
            raise ValueError(f"unknown version operator {op!r}")
    return mask


def version_matches(version: str, op: str, target: str) -> bool:
    """True if ``version`` satisfies ``<op> target`` (e.g. ``>=``, ``~``)."""
    if op == "":
        return True
    if op not in VALID_OPERATORS or op == "><":
        raise ValueError(f"cannot compare versions with operator {op!r}")
    mask = operator_mask(op)
    r = _compare(version, target, fuzzy=bool(mask & MASK_FUZZY))
    result = MASK_EQUAL if r == 0 else (MASK_LESS if r < 0 else MASK_GREATER)
    return bool(result & mask)


@functools.total_ordering
class Version:
    """A version string that sorts the way apk sorts it."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return _compare(self.text, other.text) == 0

    def __lt__(self, other: Version) -> bool:
        return _compare(self.text, other.text) < 0

    def __hash__(self) -> int:
        # Equal versions may be spelled differently ("006" equals "6"), so hash
        # what the comparison looks at, not the text.
        return hash(tuple(
            (t.kind, t.text if t.kind in (_Tok.DIGIT, _Tok.COMMIT_HASH) else t.number)
            for t in _tokens(self.text)
        ))

    def __repr__(self) -> str:
        return f"Version({self.text!r})"

    def __str__(self) -> str:
        return self.text
