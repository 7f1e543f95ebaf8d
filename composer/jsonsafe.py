"""JSON from files someone else hands you, read within bounds and checked for shape.

``json.loads`` recurses once per nesting level (a deep file raises RecursionError),
turns thousands of digits into a ValueError or an unbounded ``int``, and returns
whatever types the file holds. Every JSON document composer reads that it did not
just write in the same process (manifest.json, OCI index/manifest/config blobs, lock
files, cache records, registry answers) goes through :func:`load_json`, and its values
are read through :class:`JsonValue`, which names the document and the field path in
every error.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from composer.errors import ArchiveError, ComposerError
from composer.numbers import clip, shorten

MAX_BYTES = 16 << 20
MAX_DEPTH = 32
MAX_NUMBER_CHARS = 24
"""Any 64-bit integer, and floats as JSON writers print them."""
MAX_VALUES = 1_000_000


def _too_deep(text: str, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than ``limit``: one linear pass, so
    the parser below never meets a depth that would exhaust the C stack."""
    depth = 0
    in_string = False
    escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def load_json(data: bytes, *, what: str, error: type[ComposerError] = ArchiveError,
              max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
              max_values: int = MAX_VALUES) -> JsonValue:
    """Parse ``data`` (strict UTF-8 JSON) within bounds; ``what`` names it in errors
    (a path or a role), ``error`` is the class raised (its exit code is the caller's)."""
    if len(data) > max_bytes:
        raise error(f"{what}: {len(data)} bytes of JSON, more than the {max_bytes} allowed")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what}: not UTF-8 at byte {exc.start}") from None
    if _too_deep(text, max_depth):
        raise error(f"{what}: JSON nested more than {max_depth} levels deep")
    count = 0

    def number(kind: type[int] | type[float]) -> Any:
        def parse(token: str) -> int | float:
            nonlocal count
            count += 1
            if len(token) > MAX_NUMBER_CHARS:
                raise ValueError(f"number of {len(token)} characters (at most {MAX_NUMBER_CHARS})")
            value = kind(token)
            if isinstance(value, float) and value in (float("inf"), float("-inf")):
                raise ValueError(f"number {token[:MAX_NUMBER_CHARS]} out of range")
            return value
        return parse

    def constant(token: str) -> NoReturn:
        raise ValueError(f"{token} is not JSON")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal count
        count += len(items) + 1
        if count > max_values:
            raise ValueError(f"more than {max_values} values")
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                raise ValueError(f"duplicate key {shorten(key)}")
            result[key] = value
        return result

    try:
        value = json.loads(text, parse_int=number(int), parse_float=number(float),
                           parse_constant=constant, object_pairs_hook=pairs)
    except RecursionError:
        raise error(f"{what}: JSON nested too deeply") from None
    except ValueError as exc:
        raise error(f"{what}: not valid JSON ({str(exc).splitlines()[0]})") from None
    return JsonValue(value, what=what, error=error)


def read_regular_file(path: Path, *, what: str, max_bytes: int,
                      error: type[ComposerError] = ArchiveError) -> bytes:
    """The bytes of ``path`` when it is a regular file of at most ``max_bytes``.

    Opened without blocking and checked with fstat before reading, so a FIFO, a device
    or a folder in its place is an error, never a hang or an endless read. A missing
    file raises FileNotFoundError for the caller to word.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(f"{what}: cannot read ({exc.strerror or exc})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
        os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{what}: not a regular file")
        raise error(f"{what}: {info.st_size} bytes, more than the {max_bytes} allowed")
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise error(f"{what}: cannot read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise error(f"{what}: more than the {max_bytes} bytes allowed")
    return data


def load_json_file(path: Path, *, what: str, error: type[ComposerError] = ArchiveError,
                   max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
                   max_values: int = MAX_VALUES) -> JsonValue:
    """:func:`load_json` of a regular file read within ``max_bytes`` (FileNotFoundError
    passes through)."""
    data = read_regular_file(path, what=what, max_bytes=max_bytes, error=error)
    return load_json(data, what=what, error=error, max_bytes=max_bytes, max_depth=max_depth,
                     max_values=max_values)


class JsonValue:
    """A parsed JSON value with its place (``what`` and a ``$.a.b[0]`` path), read through
    typed accessors that raise the document's error class naming both."""

    __slots__ = ("value", "what", "path", "error")

    def __init__(self, value: Any, *, what: str, path: str = "$",
                 error: type[ComposerError] = ArchiveError) -> None:
        self.value = value
        self.what = what
        self.path = path
        self.error = error

    def fail(self, message: str) -> NoReturn:
        """Raise the document's error for this value."""
        raise self.error(f"{self.what}: {self.path}: {message}")

    def _expect(self, kind: type | tuple[type, ...], name: str) -> Any:
        if isinstance(self.value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            self.fail(f"expected {name}, found {_kind(self.value)}")
        if not isinstance(self.value, kind):
            self.fail(f"expected {name}, found {_kind(self.value)}")
        return self.value

    def _child(self, value: Any, step: str) -> JsonValue:
        return JsonValue(value, what=self.what, path=self.path + clip(step, 80),
                         error=self.error)

    # containers
    def keys(self) -> list[str]:
        return list(self._expect(dict, "an object"))

    def has(self, key: str) -> bool:
        return key in self._expect(dict, "an object")

    def field(self, key: str) -> JsonValue:
        """The member ``key`` of an object; missing is an error."""
        obj = self._expect(dict, "an object")
        if key not in obj:
            self.fail(f"missing {key!r}")
        return self._child(obj[key], f".{key}")

    def optional(self, key: str) -> JsonValue | None:
        """The member ``key`` of an object, or None when absent or null."""
        obj = self._expect(dict, "an object")
        return None if obj.get(key) is None else self._child(obj[key], f".{key}")

    def items(self, *, max_items: int | None = None) -> Iterator[JsonValue]:
        """The elements of an array."""
        seq = self._expect(list, "an array")
        if max_items is not None and len(seq) > max_items:
            self.fail(f"{len(seq)} entries, more than the {max_items} allowed")
        for i, value in enumerate(seq):
            yield self._child(value, f"[{i}]")

    def members(self, *, max_items: int | None = None) -> Iterator[tuple[str, JsonValue]]:
        """The (key, value) pairs of an object, in file order."""
        obj = self._expect(dict, "an object")
        if max_items is not None and len(obj) > max_items:
            self.fail(f"{len(obj)} members, more than the {max_items} allowed")
        for key, value in obj.items():
            yield key, self._child(value, f".{key}")

    # scalars
    def str(self, *, max_len: int = 4096) -> str:
        text: str = self._expect(str, "a string")
        if len(text) > max_len:
            self.fail(f"string of {len(text)} characters, more than {max_len}")
        return text

    def int(self, *, minimum: int = 0, maximum: int = (1 << 63) - 1) -> int:
        number: int = self._expect(int, "an integer")
        if not minimum <= number <= maximum:
            self.fail(f"{number} is outside {minimum}..{maximum}")
        return number

    def number(self) -> float:
        """An integer or a finite number, as a float."""
        number: int | float = self._expect((int, float), "a number")
        value = float(number)
        if not math.isfinite(value):
            self.fail(f"{number} is not a finite number")
        return value

    def bool(self) -> bool:
        flag: bool = self._expect(bool, "true or false")
        return flag

    def raw(self) -> Any:
        """The plain Python value (for comparing or re-serialising, never for indexing blindly)."""
        return self.value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "an array", str: "a string", int: "an integer",
            float: "a number"}.get(type(value), type(value).__name__)
