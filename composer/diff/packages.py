"""Package versions of an image, from its installed database or from manifest.json."""

from __future__ import annotations

from composer.apk.db import parse_installed
from composer.jsonsafe import JsonValue

INSTALLED = "/lib/apk/db/installed"
MAX_PACKAGES = 100_000


def installed_versions(data: bytes, *, source: str) -> dict[str, str]:
    """name → version of each record of an installed database (ArchiveError when malformed)."""
    return {pkg.name: pkg.version for pkg in parse_installed(data, source=source)}


def split_package(text: str) -> tuple[str, str]:
    """``py3-foo-1.2-r0`` → (``py3-foo``, ``1.2-r0``): apk's name-version-release."""
    parts = text.rsplit("-", 2)
    if len(parts) == 3 and parts[2].startswith("r"):
        return parts[0], f"{parts[1]}-{parts[2]}"
    return text, ""


def manifest_versions(manifest: JsonValue) -> dict[str, dict[str, str]]:
    """arch → name → version from manifest.json's ``packages`` (``{arch: [name-ver, …]}``)."""
    found: dict[str, dict[str, str]] = {}
    listed = manifest.optional("packages")
    if listed is None:
        return found
    for arch, names in listed.members(max_items=64):
        versions = found.setdefault(arch, {})
        for item in names.items(max_items=MAX_PACKAGES):
            name, version = split_package(item.str(max_len=512))
            versions[name] = version
    return found
