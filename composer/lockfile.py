"""The lock file: a build plan written down, as canonical JSON a reviewer can diff.

``<profile>.lock.json`` pins everything a build reads: the profile's state (a digest per
top-level key and per overlay host file), the release key, per architecture the
minirootfs, the package signing keys, each repository index and each package, and the
timestamp. Paths are relative to the mirror, so the same lock builds from Alpine's CDN,
a local mirror or a vendored folder. Keys are sorted; a list of flat records (packages,
repositories, keys) is written one record per line, so a diff shows one line per package.

Pure: bytes in, values out. A lock someone hands you is read through
:mod:`composer.jsonsafe` and must carry the digest of its own content, so a hand edit is
refused before any of its values is used.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from composer.errors import VerificationError
from composer.jsonsafe import JsonValue, load_json
from composer.urls import is_url

LOCK_VERSION = 1
LOCK_SUFFIX = ".lock.json"
MAX_LOCK_BYTES = 16 << 20
MAX_PACKAGES = 100_000

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")


def lock_path_for(profile: Path) -> Path:
    """``profiles/web.yaml`` → ``profiles/web.lock.json``: the lock a build finds by itself."""
    return profile.with_name(profile.name.rsplit(".", 1)[0] + LOCK_SUFFIX)


@dataclass(frozen=True)
class ProfileState:
    """What the profile was when locked: a digest per top-level key (the build mirror left
    out) and per overlay host file (``sha256:<hex>``, `` executable`` for 0755 tree files)."""

    name: str
    parts: Mapping[str, str]
    files: Mapping[str, str]

    @property
    def digest(self) -> str:
        body = json.dumps({"files": dict(self.files), "parts": dict(self.parts)},
                          sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()


def profile_state(name: str, parts: Mapping[str, str],
                  overlay: Iterable[tuple[str, str, int]]) -> ProfileState:
    """The state of a profile from its key digests and its overlay host files
    (path, sha256, mode)."""
    files = {path: f"sha256:{sha256}" + (" executable" if mode & 0o111 else "")
             for path, sha256, mode in overlay}
    return ProfileState(name=name, parts=dict(sorted(parts.items())),
                        files=dict(sorted(files.items())))


def profile_changes(locked: ProfileState, current: ProfileState) -> list[str]:
    """What changed since locking, named: profile keys, then overlay files."""
    changed = [f"{key}" for key in sorted(set(locked.parts) | set(current.parts))
               if locked.parts.get(key) != current.parts.get(key)]
    for path in sorted(set(locked.files) | set(current.files)):
        before, after = locked.files.get(path), current.files.get(path)
        if before == after:
            continue
        how = "added" if before is None else "removed" if after is None else "changed"
        changed.append(f"overlay file {path} ({how})")
    return changed


@dataclass(frozen=True)
class LockedKey:
    """A key file: an APK signing key (``name`` as in /etc/apk/keys), or the OpenPGP release
    key (with its ``fingerprint``). ``source`` is where the profile names it (a URL or a
    path relative to the profile); None for keys taken from the minirootfs."""

    name: str
    sha256: str
    source: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class LockedFile:
    """A file on the mirror (``path`` relative to the mirror, or a URL outside it)."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class LockedMinirootfs:
    """The release tarball, its detached signature and who signed it."""

    release: str
    path: str
    size: int
    sha256: str
    sha512: str | None = None
    signed_by: str | None = None
    signature: LockedFile | None = None


@dataclass(frozen=True)
class LockedRepository:
    """One repository's signed index as the lock saw it."""

    repository: str
    path: str
    size: int
    sha256: str
    signer: str
    key_sha256: str
    tag: str | None = None


@dataclass(frozen=True)
class LockedPackage:
    """One package of the resolved set. Packages the minirootfs already holds (same ``C:``)
    are marked ``from_minirootfs`` and carry no file of their own."""

    name: str
    version: str
    arch: str
    checksum: str
    repository: str | None = None
    size: int | None = None
    sha256: str | None = None
    from_minirootfs: bool = False

    @property
    def label(self) -> str:
        return f"{self.name}-{self.version}"

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}.apk"


@dataclass(frozen=True)
class LockedArch:
    """One architecture: release, minirootfs, trusted package keys, indexes and packages
    (in the order they are installed)."""

    arch: str
    release: str
    minirootfs: LockedMinirootfs | None = None
    keys: tuple[LockedKey, ...] = ()
    repositories: tuple[LockedRepository, ...] = ()
    packages: tuple[LockedPackage, ...] = ()


@dataclass(frozen=True)
class LockFile:
    """A whole lock: the profile's state, the release key, one entry per architecture and
    the timestamp (with where it came from)."""

    profile: ProfileState
    branch: str
    source_date_epoch: int
    epoch_source: str
    arches: tuple[LockedArch, ...]
    release_key: LockedKey | None = None

    def arch(self, name: str) -> LockedArch | None:
        return next((a for a in self.arches if a.arch == name), None)


def package_path(arch: str, package: LockedPackage) -> str:
    """The package's file relative to the mirror: ``<repository>/<arch>/<name>-<version>.apk``."""
    return f"{package.repository}/{arch}/{package.filename}"


# --- writing ----------------------------------------------------------------------------


def _compact(record: Any) -> Any:
    """A dataclass as a dict without None, False and empty values (absent means default)."""
    if hasattr(record, "__dataclass_fields__"):
        out = {}
        for f in fields(record):
            value = getattr(record, f.name)
            if value is None or value is False or value == () or value == {}:
                continue
            out[f.name] = _compact(value)
        return out
    if isinstance(record, (list, tuple)):
        return [_compact(v) for v in record]
    if isinstance(record, Mapping):
        return {k: _compact(v) for k, v in record.items()}
    return record


def lock_body(lock: LockFile) -> dict[str, Any]:
    """The lock as plain JSON values, without its own digest."""
    profile = lock.profile
    body: dict[str, Any] = {
        "lock_version": LOCK_VERSION,
        "profile": {"name": profile.name, "digest": f"sha256:{profile.digest}",
                    "parts": dict(profile.parts), "files": dict(profile.files)},
        "branch": lock.branch,
        "source_date_epoch": lock.source_date_epoch,
        "epoch_source": lock.epoch_source,
        "arches": _compact(lock.arches),
    }
    if lock.release_key is not None:
        body["release_key"] = _compact(lock.release_key)
    return body


def _flat(value: Any) -> bool:
    return isinstance(value, dict) and all(
        not isinstance(v, (dict, list)) or (isinstance(v, dict) and _flat(v))
        for v in value.values())


def _render(value: Any, indent: int) -> str:
    pad = "  " * (indent + 1)
    if isinstance(value, dict) and value:
        items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {_render(v, indent + 1)}"
                 for k, v in sorted(value.items())]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(value, list) and value:
        if all(_flat(v) for v in value):
            lines = [pad + json.dumps(v, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))
                     for v in value]
        else:
            lines = [pad + _render(v, indent + 1) for v in value]
        return "[\n" + ",\n".join(lines) + "\n" + "  " * indent + "]"
    return json.dumps(value, ensure_ascii=False)


def render_lock(lock: LockFile) -> bytes:
    """Canonical bytes: sorted keys, two-space indent, one flat record per line, and the
    sha256 of the body without ``digest`` as ``digest``."""
    body = lock_body(lock)
    body["digest"] = "sha256:" + _body_digest(body)
    return (_render(body, 0) + "\n").encode("utf-8")


def _body_digest(body: Mapping[str, Any]) -> str:
    plain = {k: v for k, v in body.items() if k != "digest"}
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- reading ----------------------------------------------------------------------------


def parse_lock(data: bytes, *, what: str) -> LockFile:
    """Read a lock file (hostile until proven otherwise): bounded JSON, every field typed and
    checked, and the recorded digest equal to the content's."""
    doc = load_json(data, what=what, error=VerificationError, max_bytes=MAX_LOCK_BYTES)
    version = doc.field("lock_version").int()
    if version != LOCK_VERSION:
        doc.field("lock_version").fail(f"lock version {version}; this alpine-composer reads "
                                       f"version {LOCK_VERSION} (run `alpine-composer lock "
                                       "--update` to rewrite it)")
    recorded = _digest_text(doc.field("digest"), "sha256:")
    actual = _body_digest(doc.raw())
    if recorded != actual:
        raise VerificationError(f"{what}: its content does not match its digest (edited by hand "
                                "or damaged); run `alpine-composer lock --update` to write it "
                                "again")
    profile = doc.field("profile")
    state = ProfileState(name=profile.field("name").str(max_len=255),
                         parts=_digest_map(profile.field("parts"), plain=True),
                         files=_digest_map(profile.field("files"), plain=False))
    if f"sha256:{state.digest}" != profile.field("digest").str():
        profile.field("digest").fail("does not match the digests of its parts")
    release_key = doc.optional("release_key")
    return LockFile(
        profile=state,
        branch=doc.field("branch").str(max_len=64),
        source_date_epoch=doc.field("source_date_epoch").int(maximum=2**33 - 1),
        epoch_source=doc.field("epoch_source").str(max_len=64),
        arches=tuple(_arch(a) for a in doc.field("arches").items(max_items=64)),
        release_key=_key(release_key) if release_key is not None else None,
    )


def _digest_text(value: JsonValue, prefix: str = "") -> str:
    text = value.str(max_len=200)
    hexpart = text.removeprefix(prefix) if prefix else text
    if (prefix and not text.startswith(prefix)) or not _HEX64.fullmatch(hexpart):
        value.fail(f"expected {prefix}<64 hex digits>")
    return hexpart


def _digest_map(value: JsonValue, *, plain: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, item in value.members():
        if len(key) > 4096:
            item.fail("key too long")
        if plain:
            out[key] = _digest_text(item)
        else:
            text = item.str(max_len=200)
            digest, _, flag = text.partition(" ")
            if not digest.startswith("sha256:") or not _HEX64.fullmatch(digest[7:]) \
                    or flag not in ("", "executable"):
                item.fail("expected sha256:<64 hex digits>, optionally followed by ' executable'")
            out[key] = text
    return out


def _path(value: JsonValue) -> str:
    text = value.str(max_len=4096)
    if is_url(text):
        return text
    parts = text.split("/")
    if not text or "://" in text or ".." in parts or "" in parts or "\\" in text \
            or "\0" in text:
        value.fail(f"{text[:80]!r} is not a path relative to the mirror")
    return text


def _name(value: JsonValue, pattern: str = r"[A-Za-z0-9@._+-]{1,255}") -> str:
    text = value.str(max_len=255)
    if not re.fullmatch(pattern, text):
        value.fail(f"{text[:80]!r} is not a valid name")
    return text


def _opt(value: JsonValue, key: str) -> JsonValue | None:
    return value.optional(key)


def _key(value: JsonValue) -> LockedKey:
    source = _opt(value, "source")
    fingerprint = _opt(value, "fingerprint")
    if fingerprint is not None and not re.fullmatch(r"[0-9A-F]{40}|[0-9A-F]{64}",
                                                    fingerprint.str()):
        fingerprint.fail("expected an upper-case OpenPGP fingerprint")
    return LockedKey(name=_name(value.field("name")), sha256=_digest_text(value.field("sha256")),
                     source=source.str(max_len=4096) if source is not None else None,
                     fingerprint=fingerprint.str() if fingerprint is not None else None)


def _file(value: JsonValue) -> LockedFile:
    return LockedFile(path=_path(value.field("path")), size=value.field("size").int(),
                      sha256=_digest_text(value.field("sha256")))


def _minirootfs(value: JsonValue) -> LockedMinirootfs:
    sha512 = _opt(value, "sha512")
    if sha512 is not None and not _HEX128.fullmatch(sha512.str()):
        sha512.fail("expected 128 hex digits")
    signed_by = _opt(value, "signed_by")
    signature = _opt(value, "signature")
    return LockedMinirootfs(
        release=_name(value.field("release")), path=_path(value.field("path")),
        size=value.field("size").int(), sha256=_digest_text(value.field("sha256")),
        sha512=sha512.str() if sha512 is not None else None,
        signed_by=signed_by.str(max_len=64) if signed_by is not None else None,
        signature=_file(signature) if signature is not None else None)


def _repository(value: JsonValue) -> LockedRepository:
    tag = _opt(value, "tag")
    return LockedRepository(
        repository=_path(value.field("repository")), path=_path(value.field("path")),
        size=value.field("size").int(), sha256=_digest_text(value.field("sha256")),
        signer=_name(value.field("signer")), key_sha256=_digest_text(value.field("key_sha256")),
        tag=_name(tag) if tag is not None else None)


def _package(value: JsonValue) -> LockedPackage:
    mini = _opt(value, "from_minirootfs")
    from_minirootfs = mini.bool() if mini is not None else False
    repository = _opt(value, "repository")
    size = _opt(value, "size")
    sha256 = _opt(value, "sha256")
    if not from_minirootfs and (repository is None or sha256 is None):
        value.fail("a package not from the minirootfs needs 'repository' and 'sha256'")
    checksum = value.field("checksum").str(max_len=100)
    if not re.fullmatch(r"Q[12][A-Za-z0-9+/=]{1,90}", checksum):
        value.field("checksum").fail("expected an apk Q1… checksum")
    return LockedPackage(
        name=_name(value.field("name")), version=_name(value.field("version")),
        arch=_name(value.field("arch")), checksum=checksum,
        repository=_path(repository) if repository is not None else None,
        size=size.int() if size is not None else None,
        sha256=_digest_text(sha256) if sha256 is not None else None,
        from_minirootfs=from_minirootfs)


def _arch(value: JsonValue) -> LockedArch:
    mini = _opt(value, "minirootfs")
    keys = _opt(value, "keys")
    repos = _opt(value, "repositories")
    packages = _opt(value, "packages")
    return LockedArch(
        arch=_name(value.field("arch")), release=_name(value.field("release")),
        minirootfs=_minirootfs(mini) if mini is not None else None,
        keys=tuple(_key(k) for k in keys.items(max_items=1000)) if keys else (),
        repositories=tuple(_repository(r) for r in repos.items(max_items=100)) if repos else (),
        packages=tuple(_package(p) for p in packages.items(max_items=MAX_PACKAGES))
        if packages else ())


# --- comparing --------------------------------------------------------------------------


@dataclass(frozen=True)
class LockChanges:
    """What another lock would install differently, per architecture, as lines for people."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    upgraded: tuple[str, ...] = ()
    other: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.upgraded or self.other)

    def lines(self) -> list[str]:
        return ([f"added {t}" for t in self.added] + [f"removed {t}" for t in self.removed]
                + [f"upgraded {t}" for t in self.upgraded] + [f"changed {t}" for t in self.other])

    def summary(self) -> str:
        counts = [(len(self.added), "added"), (len(self.removed), "removed"),
                  (len(self.upgraded), "upgraded"), (len(self.other), "changed")]
        return ", ".join(f"{n} {word}" for n, word in counts if n) or "no changes"


def compare_locks(old: LockFile | None, new: LockFile, *,
                  with_files: bool = True) -> LockChanges:
    """Packages added, removed and upgraded (or rebuilt: same version, other checksum), the
    minirootfs release, and (``with_files``) any pinned file whose bytes moved."""
    added: list[str] = []
    removed: list[str] = []
    upgraded: list[str] = []
    other: list[str] = []
    for arch in new.arches:
        before = old.arch(arch.arch) if old is not None else None
        if before is None:
            added.extend(f"{p.label} ({arch.arch})" for p in arch.packages)
            continue
        if before.release != arch.release:
            upgraded.append(f"minirootfs {before.release} -> {arch.release} ({arch.arch})")
        elif with_files and _mini_id(before.minirootfs) != _mini_id(arch.minirootfs):
            other.append(f"minirootfs {arch.release} ({arch.arch}): other bytes")
        was = {p.name: p for p in before.packages}
        now = {p.name: p for p in arch.packages}
        for name in sorted(set(was) | set(now)):
            a, b = was.get(name), now.get(name)
            if a is None and b is not None:
                added.append(f"{b.label} ({arch.arch})")
            elif b is None and a is not None:
                removed.append(f"{a.label} ({arch.arch})")
            elif a is not None and b is not None:
                if a.version != b.version:
                    upgraded.append(f"{name} {a.version} -> {b.version} ({arch.arch})")
                elif a.checksum != b.checksum or (with_files and a.sha256 and b.sha256
                                                  and a.sha256 != b.sha256):
                    other.append(f"{b.label} ({arch.arch}): other bytes for the same version")
    if old is not None:
        gone = {a.arch for a in old.arches} - {a.arch for a in new.arches}
        removed.extend(f"{p.label} ({arch})" for a in old.arches if a.arch in gone
                       for arch in [a.arch] for p in a.packages)
    return LockChanges(tuple(added), tuple(removed), tuple(upgraded), tuple(other))


def _mini_id(mini: LockedMinirootfs | None) -> str | None:
    return mini.sha256 if mini is not None else None

