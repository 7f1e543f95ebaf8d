"""Image references as the container tools write them: ``[registry/]repository[:tag][@digest]``.

The grammar is distribution's (``reference/regexp.go``): a first component with a dot,
a colon or ``localhost`` is the registry; otherwise the image is on Docker Hub, where a
one-component name lives under ``library/``. Docker Hub's API answers at
``registry-1.docker.io``, and its credentials are filed under ``https://index.docker.io/v1/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from composer.errors import UsageError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_TAG = "latest"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*"
                   r"[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
MAX_NAME = 255


@dataclass(frozen=True)
class ImageReference:
    """A parsed reference; ``text`` is what the user wrote (printed back with the digest)."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None
    text: str

    @property
    def api_host(self) -> str:
        """Where the registry's ``/v2/`` API answers."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def target(self) -> str:
        """The manifest reference to PUT: the tag, else the digest."""
        return self.tag or self.digest or DEFAULT_TAG

    @property
    def name(self) -> str:
        """``registry/repository``, for messages."""
        return f"{self.registry}/{self.repository}"

    def pinned(self, digest: str) -> str:
        """``REF@sha256:…``: what a fleet pulls to get exactly these bytes."""
        base = self.text.split("@", 1)[0]
        return f"{base}@{digest}"


def parse_reference(text: str) -> ImageReference:
    """Parse ``text`` or raise a UsageError naming what is wrong with it."""
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not DIGEST.fullmatch(digest):
            raise UsageError(f"image reference {text!r}: {digest!r} is not a sha256 digest "
                             "(sha256: and 64 lowercase hex digits)")
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise UsageError(f"image reference {text!r}: tag {tag!r} is not valid (letters, digits, "
                             "_ . -, at most 128, not starting with . or -)")
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, remainder
        if not _HOST.fullmatch(registry):
            raise UsageError(f"image reference {text!r}: {registry!r} is not a registry host[:port]")
    else:
        registry, repository = DOCKER_HUB, rest
    if registry in ("index.docker.io", DOCKER_HUB_API):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not repository or not _NAME.fullmatch(repository):
        raise UsageError(f"image reference {text!r}: repository {repository!r} is not valid "
                         "(lowercase letters, digits and separators . _ __ - between them, "
                         "components joined by /)")
    if len(repository) > MAX_NAME:
        raise UsageError(f"image reference {text!r}: repository name longer than {MAX_NAME} "
                         "characters")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return ImageReference(registry=registry, repository=repository, tag=tag, digest=digest,
                          text=text)
