"""Numbers and values from untrusted text, bounded before Python sees them.

``int()`` accepts Unicode digits, underscores, signs and surrounding space, and
refuses strings past 4,300 digits with a ValueError; ``str.isdigit`` accepts
superscripts that ``int()`` then rejects. Every number read from a mirror, a
cache, a package or a profile goes through :func:`parse_decimal` instead.
"""

from __future__ import annotations

MAX_DIGITS = 20
"""Enough for any unsigned 64-bit value."""

_ASCII_DIGITS = frozenset("0123456789")


def parse_decimal(text: str, *, max_digits: int = MAX_DIGITS) -> int | None:
    """The value of a run of ASCII digits of sane length, or None for anything else."""
    if not text or len(text) > max_digits or not _ASCII_DIGITS.issuperset(text):
        return None
    return int(text)


def parse_octal(text: str, *, max_digits: int = 24) -> int | None:
    """The value of a run of ASCII octal digits of sane length, or None."""
    if not text or len(text) > max_digits or not frozenset("01234567").issuperset(text):
        return None
    return int(text, 8)


def shorten(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, so an error line stays one short line."""
    text = repr(value) if not isinstance(value, str) or len(value) <= limit else repr(value[:limit])
    if isinstance(value, str) and len(value) > limit:
        return f"{text[:-1]}…{text[-1]} ({len(value)} characters)"
    return text if len(text) <= limit + 2 else text[:limit] + "…"


def clip(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[:limit] + "…"
