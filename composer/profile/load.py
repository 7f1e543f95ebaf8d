"""Read a profile file (following ``extends``) into a validated :class:`Profile`.

Merge rules for ``extends`` are those of :mod:`composer.profile.layers` (the variant's
preset is the bottom layer by the same rules): mappings merge key by key, ``packages``
and runlevels accumulate (``-name`` removes), overlay files, folders and links merge by
path, everything else in the child replaces the parent's value. Relative paths
(overlay sources and trees, keys, a file-based trust key) are resolved against the
file that wrote them and then re-expressed relative to the top profile's folder, so
the merged profile carries no machine paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from composer.errors import ProfileError
from composer.numbers import shorten
from composer.profile.layers import merge_layers
from composer.profile.model import DEFAULT_MIRROR, Profile, output_formats
from composer.profile.yamlsafe import load_yaml
from composer.urls import is_url, rebase_url

MAX_EXTENDS_DEPTH = 16
MAX_PROFILE_SIZE = 1024 * 1024
MAX_NAME = 255
# pydantic puts the union member (an output format, a model name) into an error's location.
SECRET_FIELDS = frozenset({"password"})
"""Fields whose value an error never repeats: a mistaken password may be a real one."""
_UNION_TAGS = frozenset((*output_formats(), "PinnedKey", "str", "Repository"))


@dataclass(frozen=True)
class LoadedProfile:
    """A validated profile plus where it came from and its content digest."""

    profile: Profile
    path: Path
    base_dir: Path
    digest: str
    files: tuple[Path, ...]
    parts: Mapping[str, str] = field(default_factory=dict)
    """A digest per top-level key (see :func:`profile_parts`)."""

    def resolve(self, relative: str) -> Path:
        """A path written in the profile, resolved against the profile's folder."""
        return (self.base_dir / relative).resolve()


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise ProfileError(f"{path}: not a regular file")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_PROFILE_SIZE + 1)
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such profile file") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile ({exc.strerror or exc})") from None
    if len(raw) > MAX_PROFILE_SIZE:
        raise ProfileError(f"{path}: larger than {MAX_PROFILE_SIZE} bytes; not a profile")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{path}: cannot read profile (not UTF-8 at byte {exc.start})") from None
    data = load_yaml(text, source=str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile must be a mapping of keys, not {type(data).__name__}")
    return data


def _rebase(value: str, file_dir: Path, top_dir: Path) -> str:
    if is_url(value) or os.path.isabs(value):
        return value
    absolute = os.path.normpath(os.path.join(file_dir, value))
    return Path(os.path.relpath(absolute, top_dir)).as_posix()


def _rebase_paths(data: dict[str, Any], file_dir: Path, top_dir: Path) -> dict[str, Any]:
    """Re-express the relative path fields of one file relative to the top profile."""
    if file_dir == top_dir:
        return data
    out = dict(data)
    overlay = out.get("overlay")
    if isinstance(overlay, dict):
        overlay = dict(overlay)
        tree = overlay.get("tree")
        if isinstance(tree, str):
            overlay["tree"] = _rebase(tree, file_dir, top_dir)
        elif isinstance(tree, list):
            overlay["tree"] = [_rebase(t, file_dir, top_dir) if isinstance(t, str) else t for t in tree]
        files = overlay.get("files")
        if isinstance(files, list):
            overlay["files"] = [
                {**f, "source": _rebase(f["source"], file_dir, top_dir)}
                if isinstance(f, dict) and isinstance(f.get("source"), str) else f
                for f in files
            ]
        out["overlay"] = overlay
    keys = out.get("keys")
    if isinstance(keys, list):
        out["keys"] = [
            _rebase(k, file_dir, top_dir) if isinstance(k, str)
            else {**k, "file": _rebase(k["file"], file_dir, top_dir)}
            if isinstance(k, dict) and isinstance(k.get("file"), str) else k
            for k in keys
        ]
    trust = out.get("trust")
    if isinstance(trust, dict) and isinstance(trust.get("key"), str):
        out["trust"] = {**trust, "key": _rebase(trust["key"], file_dir, top_dir)}
    return out


@dataclass(frozen=True)
class _Layer:
    """One file of an ``extends`` chain and the keys it wrote itself."""

    path: Path
    data: dict[str, Any]


def _load_raw(path: Path, top_dir: Path, chain: list[Path]) -> tuple[dict[str, Any], list[_Layer]]:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in [*chain, resolved])
        raise ProfileError(f"{path}: 'extends' loops back on itself ({cycle})")
    if len(chain) >= MAX_EXTENDS_DEPTH:
        raise ProfileError(f"{path}: 'extends' is nested more than {MAX_EXTENDS_DEPTH} deep")
    data = _read_yaml(path)
    parent_ref = data.pop("extends", None)
    layers = [_Layer(path, data)]
    data = _rebase_paths(data, resolved.parent, top_dir)
    if parent_ref is None:
        return data, layers
    if not isinstance(parent_ref, str) or not parent_ref or "\0" in parent_ref:
        raise ProfileError(f"{path}: extends: expected a path to another profile file")
    if any(len(part) > MAX_NAME for part in Path(parent_ref).parts) or len(parent_ref) > 4096:
        raise ProfileError(f"{path}: extends: {shorten(parent_ref)} is too long for a file name")
    parent_path = (resolved.parent / parent_ref)
    try:
        exists = parent_path.exists()
    except OSError as exc:
        raise ProfileError(f"{path}: extends: {shorten(parent_ref)}: {exc.strerror}") from None
    if not exists:
        raise ProfileError(f"{path}: extends: {parent_ref!r} does not exist")
    parent, parent_layers = _load_raw(parent_path, top_dir, [*chain, resolved])
    if "name" not in data and "name" in parent:
        raise ProfileError(f"{path}: name: required in a profile that extends another (without "
                           f"it the build would write into {parent['name']!r}'s output folder)")
    return merge_layers(parent, data), [*layers, *parent_layers]


def _origin(layers: list[_Layer], loc: tuple[Any, ...]) -> Path:
    """The file of the chain (child first) that wrote the value at ``loc``."""
    keys: list[str] = []
    for part in loc:
        if not isinstance(part, str):
            break
        keys.append(part)
    for depth in range(len(keys), 0, -1):
        for layer in layers:
            node: Any = layer.data
            for key in keys[:depth]:
                node = node.get(key, _ABSENT) if isinstance(node, dict) else _ABSENT
            if node is not _ABSENT:
                return layer.path
    return layers[0].path


_ABSENT = object()


def _canonical_sha256(value: Any) -> str:
    body = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def profile_parts(profile: Profile) -> dict[str, str]:
    """sha256 of each top-level key of the profile as its files set it (``extends`` merged,
    presets applied, values normalised: ``arch: x86_64`` is ``arch: [x86_64]``), so a change
    can be named by key.

    Only what was set counts, never a default: a newer alpine-composer with more options
    must not call an untouched profile changed. The build mirror is left out: it says where
    bytes are fetched from, not what is built, and repository URLs under it count as the
    same paths under any mirror (``--mirror`` does not change a digest)."""
    body = profile.model_dump(mode="json", exclude_unset=True)
    body.pop("mirror", None)
    if profile.repositories:
        body["repositories"] = [
            {**r.model_dump(mode="json", exclude_unset=True),
             "url": rebase_url(r.url, profile.mirror, "$mirror")}
            for r in profile.repositories]
    return {key: _canonical_sha256(value) for key, value in sorted(body.items())}


def parts_digest(parts: dict[str, str]) -> str:
    """The profile's digest: sha256 over :func:`profile_parts`."""
    return _canonical_sha256(parts)


def load_profile(path: Path | str, *, overrides: dict[str, Any] | None = None) -> LoadedProfile:
    """Load, merge and validate a profile; ``overrides`` (from CLI flags) win over the file."""
    path = Path(path)
    top_dir = path.resolve().parent
    data, layers = _load_raw(path, top_dir, [])
    written_mirror = data.get("mirror", DEFAULT_MIRROR)
    if overrides:
        data = merge_layers(data, overrides)
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        origin = _origin(layers, tuple(errors[0]["loc"])) if errors else path
        via = "" if origin == path else f" (in the extends chain of {path})"
        raise ProfileError(f"{origin}: {format_validation_error(exc)}{via}") from None
    if isinstance(written_mirror, str):
        profile = _repositories_moved(profile, written_mirror)
    parts = profile_parts(profile)
    return LoadedProfile(profile=profile, path=path, base_dir=top_dir,
                         digest=parts_digest(parts),
                         files=tuple(layer.path.resolve() for layer in layers), parts=parts)


def _repositories_moved(profile: Profile, written_mirror: str) -> Profile:
    """A mirror override (``--mirror``) takes the repository URLs under the profile's own
    mirror along, so they are fetched from the new mirror too (tags are kept)."""
    if not profile.repositories or written_mirror.rstrip("/") == profile.mirror:
        return profile
    moved = [r.model_copy(update={"url": rebase_url(r.url, written_mirror, profile.mirror)})
             for r in profile.repositories]
    return profile.model_copy(update={"repositories": moved})


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Known field names of the model reached by following ``loc`` (for typo hints)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        current = _model_in(fields[part].annotation)
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    origin = getattr(annotation, "__origin__", None)
    if origin is not None and origin is not annotation:
        return _model_in(origin)
    return None


def _loc_text(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif str(part).startswith(("function-", "tagged-union")):
            continue
        else:
            text += ("." if text else "") + str(part)
    return text or "(top level)"


def format_validation_error(exc: ValidationError) -> str:
    """One line: ``field.path: what was expected (got …)`` for each problem, joined with '; '."""
    messages = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and (
            p.startswith("function-") or p in _UNION_TAGS)))
        where = _loc_text(loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            import difflib  # only a profile with an unknown key pays for it

            name = str(loc[-1]) if loc else ""
            known = _fields_at(Profile, loc[:-1])
            hint = difflib.get_close_matches(name, known, n=1)
            text = f"{where}: unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            if known and not hint:
                text += f" (expected one of: {', '.join(known)})"
        elif kind == "missing":
            text = f"{where}: required key is missing"
        elif kind == "union_tag_invalid":
            ctx = err.get("ctx", {})
            field = str(ctx.get("discriminator", "tag")).strip("'")
            text = f"{where}.{field}: unknown value {ctx.get('tag')!r} " \
                   f"(expected one of {ctx.get('expected_tags')})"
        elif kind == "union_tag_not_found":
            text = f"{where}: each entry needs a 'format' key"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            secret = bool(loc) and loc[-1] in SECRET_FIELDS
            shown = "" if isinstance(got, (dict, list)) or secret else f" (got {shorten(got)})"
            text = f"{where}: {msg}{shown}"
        messages.append(text)
    seen: list[str] = []
    for m in messages:
        if m not in seen:
            seen.append(m)
    return "; ".join(seen)
