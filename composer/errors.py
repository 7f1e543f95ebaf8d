"""One exception hierarchy for the whole tool.

Library code raises these and never prints or exits; ``cli.main`` turns them
into one line on stderr and the exit code named by the class.
"""

from __future__ import annotations


class ComposerError(Exception):
    """Base of every error composer reports to a user."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(ComposerError):
    """The command line itself is wrong."""

    exit_code = 2


class ProfileError(ComposerError):
    """A profile file is missing, malformed or asks for something invalid."""

    exit_code = 2


class NotSupportedError(ComposerError):
    """The profile is valid but asks for a feature this version cannot build."""

    exit_code = 2


class FetchError(ComposerError):
    """A download failed (network, HTTP status, size, missing file)."""

    exit_code = 3


class OfflineError(FetchError):
    """--offline was given and the cache lacks something the build needs."""


class VerificationError(ComposerError):
    """A checksum or signature did not match, or an output differs on verify."""

    exit_code = 4


class ArchiveError(ComposerError):
    """An archive or package is malformed or unsafe (bad member, bad format)."""

    exit_code = 5


class ResolveError(ComposerError):
    """The requested packages cannot be satisfied."""

    exit_code = 6


class InstallError(ComposerError):
    """Packages could not be merged into the tree (conflicts and the like)."""

    exit_code = 6


class OutputError(ComposerError):
    """An output could not be written."""

    exit_code = 1


class ScratchError(ComposerError):
    """The temporary folder for spilled file contents is full or cannot be written."""

    exit_code = 1


class CacheError(ComposerError):
    """The download cache cannot be created, written or read (permissions, disk full)."""

    exit_code = 1


class NotFoundError(FetchError):
    """The server (or file:// path) says the requested file does not exist.

    Separate from FetchError so callers can treat an absent optional file,
    such as a release's ``.asc``, differently from a broken download.
    """
