"""The registry's side of the conversation, parsed strictly: it is hostile input.

Headers (``WWW-Authenticate``, ``Location``, ``Range``, ``Content-Length``,
``Docker-Content-Digest``, ``OCI-Chunk-Min-Length``) and error bodies are read here with
bounds; anything malformed is ``None`` or a :class:`RegistryError`, never an exception from
deep inside Python.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field

from composer.errors import FetchError
from composer.jsonsafe import load_json
from composer.numbers import clip, parse_decimal
from composer.publish.reference import DIGEST

MAX_HEADER = 8192
MAX_ERROR_BODY = 64 * 1024
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_PARAM = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*(,|$)')


class RegistryError(FetchError):
    """A registry refused or failed a step of a push (exit 3)."""


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: ``Basic`` or ``Bearer`` and its parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)


def parse_challenge(header: str | None) -> Challenge | None:
    """The first challenge of a ``WWW-Authenticate`` header; None when absent or malformed."""
    if not header or len(header) > MAX_HEADER:
        return None
    header = header.strip()
    scheme, _, rest = header.partition(" ")
    if not _TOKEN.fullmatch(scheme):
        return None
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if match is None:
            break  # a second challenge or junk: the first one is what we use
        key, value = match.group(1).lower(), match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params.setdefault(key, value)
        pos = match.end()
    return Challenge(scheme.lower(), params)


def parse_length(value: str | None) -> int | None:
    """A ``Content-Length``-like header: ASCII digits only."""
    return None if value is None else parse_decimal(value.strip())


def parse_digest(value: str | None) -> str | None:
    """A ``Docker-Content-Digest``: ``sha256:`` and 64 lowercase hex digits, or None."""
    if value is None:
        return None
    value = value.strip()
    return value if DIGEST.fullmatch(value) else None


def parse_range_end(value: str | None) -> int | None:
    """The last byte offset a registry reports in ``Range: 0-<end>`` (``bytes=`` allowed)."""
    if value is None:
        return None
    text = value.strip().removeprefix("bytes=")
    first, sep, last = text.partition("-")
    start, end = parse_decimal(first), parse_decimal(last)
    if not sep or start != 0 or end is None:
        return None
    return end


def resolve_location(base: str, location: str | None, *, what: str) -> str:
    """An upload ``Location`` made absolute against the request URL; only http(s), never a
    downgrade from https to http."""
    if not location or len(location) > MAX_HEADER or any(ord(c) < 0x21 for c in location):
        raise RegistryError(f"{what}: the registry sent no usable Location header")
    url = urllib.parse.urljoin(base, location)
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https") or (base.startswith("https:") and scheme != "https"):
        raise RegistryError(f"{what}: the registry sent a Location with an unusable scheme: "
                            f"{clip(location)!r}")
    return url


def error_summary(body: bytes, content_type: str | None) -> str:
    """``CODE: message`` of an OCI error body (``{"errors": [...]}``), or "" when there is none."""
    if not body or len(body) > MAX_ERROR_BODY or "json" not in (content_type or ""):
        return ""
    try:
        doc = load_json(body, what="registry error", error=RegistryError, max_bytes=MAX_ERROR_BODY)
        errors = doc.optional("errors")
        if errors is None:
            return ""
        for item in errors.items(max_items=100):
            code = item.optional("code")
            message = item.optional("message")
            parts = [p.str(max_len=200) for p in (code, message) if p is not None]
            if parts:
                return clip(": ".join(parts), 160)
    except RegistryError:
        return ""
    return ""


def error_codes(body: bytes, content_type: str | None) -> set[str]:
    """Every ``code`` of an OCI error body (DIGEST_INVALID, BLOB_UNKNOWN …)."""
    summary_codes: set[str] = set()
    if not body or len(body) > MAX_ERROR_BODY or "json" not in (content_type or ""):
        return summary_codes
    try:
        doc = load_json(body, what="registry error", error=RegistryError, max_bytes=MAX_ERROR_BODY)
        errors = doc.optional("errors")
        for item in errors.items(max_items=100) if errors is not None else ():
            code = item.optional("code")
            if code is not None:
                summary_codes.add(code.str(max_len=200))
    except RegistryError:
        pass
    return summary_codes
