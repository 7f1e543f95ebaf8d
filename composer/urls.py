"""The one rule for what counts as a URL in a profile: ``http://``, ``https://`` or ``file://``.

Anything else in a place that takes "a URL or a path" is a path relative to the profile.
"""

from __future__ import annotations

import re

URL_SCHEMES = ("http", "https", "file")
_URL = re.compile(r"^(https?|file)://")


def is_url(text: str) -> bool:
    """True for the URL forms composer can fetch from; everything else is a path."""
    return _URL.match(text) is not None


def mirror_url(mirror: str, branch: str, *parts: str) -> str:
    """A path on an Alpine mirror: ``<mirror>/<branch>/<parts…>`` (``releases/<arch>``,
    ``main`` …), the one layout every mirror URL follows."""
    return "/".join([mirror.rstrip("/"), branch, *parts])


def repository_file_url(repository: str, arch: str, name: str) -> str:
    """A file of an APK repository: ``<repository>/<arch>/<name>`` (index or package)."""
    return f"{repository}/{arch}/{name}"


def rebase_url(url: str, old: str, new: str) -> str:
    """``url`` moved from under the base ``old`` to under ``new``; any other URL is returned
    as it is. Outputs name what was fetched from the build mirror under the profile's
    ``image_mirror`` this way (the mirror is where bytes came from, not what they are)."""
    old = old.rstrip("/")
    if url == old or url.startswith(old + "/"):
        return new.rstrip("/") + url[len(old):]
    return url


def mirror_relative(url: str, mirror: str) -> str:
    """``url`` as a path relative to ``mirror`` (what a lock records, so that the same lock
    builds from any mirror); a URL outside the mirror stays whole."""
    base = mirror.rstrip("/") + "/"
    return url[len(base):] if url.startswith(base) else url


def mirror_file(mirror: str, path: str) -> str:
    """A lock's path (relative to the mirror, or a URL outside it) as the URL to fetch."""
    return path if is_url(path) else f"{mirror.rstrip('/')}/{path}"
