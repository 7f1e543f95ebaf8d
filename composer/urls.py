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
