"""The RSA public keys an APK signature may be checked against.

apk-tools matches a ``.SIGN.RSA.<name>`` entry to a trusted key purely by the
key's file name, so :class:`TrustedKeys` is a mapping from that file name to
the parsed public key. Keys come from bytes (a profile, a cache) or from the
``etc/apk/keys`` folder of a :class:`~composer.tree.FileTree`, never from the
host's own ``/etc/apk/keys``.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from composer.errors import VerificationError
from composer.tree import EntryType, FileTree, normalize_path, resolve_symlink_target

MAX_KEY_FILE_SIZE = 64 * 1024
MAX_SYMLINK_HOPS = 40


@dataclass(frozen=True)
class TrustedKey:
    """One trusted key: its file name, its PEM bytes (and their sha256) and the parsed key."""

    name: str
    data: bytes
    sha256: str
    public_key: rsa.RSAPublicKey


class KeyPin(Protocol):
    """A key file name with the sha256 its bytes must have (the profile's ``PinnedKey``)."""

    @property
    def file(self) -> str: ...

    @property
    def sha256(self) -> str: ...


def parse_public_key(name: str, data: bytes, *, source: str) -> TrustedKey:
    """Parse one PEM ``-----BEGIN PUBLIC KEY-----`` RSA key file."""
    _check_key_name(name, source=source)
    if len(data) > MAX_KEY_FILE_SIZE:
        raise VerificationError(f"{source}: key {name} is {len(data)} bytes, not a public key file")
    try:
        key = load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise VerificationError(
            f"{source}: key {name} is not a PEM public key ({_first_line(exc)})") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise VerificationError(
            f"{source}: key {name} is a {type(key).__name__}, not an RSA public key")
    return TrustedKey(name=name, data=bytes(data), sha256=hashlib.sha256(data).hexdigest(),
                      public_key=key)


def check_pinned_sha256(name: str, data: bytes, expected_sha256: str, *, source: str) -> None:
    """Refuse key bytes whose sha256 is not the one the profile pinned."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256.strip().lower():
        raise VerificationError(
            f"{source}: key {name} has sha256 {actual}, but {expected_sha256} is pinned")


class TrustedKeys(Mapping[str, rsa.RSAPublicKey]):
    """Key file name → RSA public key; the set of signers a build trusts."""

    def __init__(self, keys: Iterable[TrustedKey] = ()) -> None:
        self._keys: dict[str, TrustedKey] = {}
        for key in keys:
            self._keys[key.name] = key

    @classmethod
    def from_files(cls, files: Mapping[str, bytes], *, source: str = "trusted keys",
                   pins: Mapping[str, str] | None = None) -> TrustedKeys:
        """Parse key files given as name → PEM bytes; ``pins`` maps a name to its sha256."""
        pins = pins or {}
        for name in pins:
            if name not in files:
                raise VerificationError(f"{source}: pinned key {name} is missing")
        keys = []
        for name in sorted(files):
            if name in pins:
                check_pinned_sha256(name, files[name], pins[name], source=source)
            keys.append(parse_public_key(name, files[name], source=source))
        return cls(keys)

    @classmethod
    def from_pinned(cls, pinned: Iterable[KeyPin], files: Mapping[str, bytes], *,
                    source: str = "profile keys") -> TrustedKeys:
        """Trust exactly the pinned keys, each checked against its sha256."""
        pins = {p.file: p.sha256 for p in pinned}
        chosen = {name: files[name] for name in pins if name in files}
        return cls.from_files(chosen, source=source, pins=pins)

    @classmethod
    def from_tree(cls, tree: FileTree, directory: str = "etc/apk/keys", *,
                  source: str = "rootfs") -> TrustedKeys:
        """The keys in a tree's key folder; symlinks are followed inside the tree."""
        directory = normalize_path(directory)
        where = f"{source}: {directory}"
        folder = _follow(tree, directory, source=source)
        if folder is None:
            return cls()
        if tree.entries[folder].type != EntryType.DIR:
            raise VerificationError(f"{where} is not a directory")
        prefix = folder + "/" if folder else ""
        keys = []
        for path in sorted(tree.entries):
            if not path.startswith(prefix) or "/" in path[len(prefix):] or path == folder:
                continue
            name = path[len(prefix):]
            real = _follow(tree, path, source=source)
            if real is None:
                raise VerificationError(f"{where}/{name}: symlink points to a missing file")
            entry = tree.entries[real]
            if entry.type == EntryType.DIR:
                continue
            if entry.type != EntryType.FILE or entry.blob is None:
                raise VerificationError(f"{where}/{name}: not a regular file")
            keys.append(parse_public_key(name, entry.blob.read(), source=f"{where}"))
        return cls(keys)

    def merged(self, other: TrustedKeys) -> TrustedKeys:
        """Both key sets; on a name clash ``other`` wins."""
        return TrustedKeys([*self._keys.values(), *other._keys.values()])

    def key(self, name: str) -> TrustedKey:
        return self._keys[name]

    def __getitem__(self, name: str) -> rsa.RSAPublicKey:
        return self._keys[name].public_key

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._keys))

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"TrustedKeys({sorted(self._keys)})"


def _follow(tree: FileTree, path: str, *, source: str) -> str | None:
    """Where ``path`` really is inside the tree, following symlinks in every component.

    Returns None when some component does not exist.
    """
    pending = [p for p in path.split("/") if p]
    resolved = ""
    hops = 0
    while pending:
        part = pending.pop(0)
        candidate = f"{resolved}/{part}" if resolved else part
        entry = tree.get(candidate)
        if entry is None:
            return None
        if entry.type != EntryType.SYMLINK:
            resolved = candidate
            continue
        hops += 1
        if hops > MAX_SYMLINK_HOPS:
            raise VerificationError(f"{source}: too many levels of symlinks at {path}")
        target = resolve_symlink_target(candidate, entry.target)
        if target is None:
            raise VerificationError(
                f"{source}: symlink {candidate} -> {entry.target} leaves the root")
        pending = [p for p in target.split("/") if p] + pending
        resolved = ""
    return resolved


def _check_key_name(name: str, *, source: str) -> None:
    if not name or "/" in name or name in (".", "..") or "\x00" in name \
            or posixpath.basename(name) != name:
        raise VerificationError(f"{source}: {name!r} is not a valid key file name")


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
