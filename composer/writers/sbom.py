"""SBOMs of an image's package set: SPDX 2.3 JSON and CycloneDX 1.5 JSON.

Pure: everything comes from the arguments (no clock, no random ids). The SPDX
namespace and the CycloneDX serial number are name-based UUIDs of the document's
own content, so the same package set and epoch always give the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from composer.errors import OutputError
from composer.timefmt import rfc3339
from composer.writers.spdx_ids import EXCEPTION_IDS, LICENSE_IDS

TOOL_NAME = "alpine-composer"
SPDX_NAMESPACE_BASE = "https://alpine-composer.invalid/spdxdocs/"
MEDIA_SPDX = "application/spdx+json"
MEDIA_CYCLONEDX = "application/vnd.cyclonedx+json"
NOASSERTION = "NOASSERTION"

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")
_MAINTAINER = re.compile(r"^\s*(?P<name>[^<]*?)\s*<(?P<email>[^>]*)>\s*$")
_LICENSE_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_OPERATORS = {"AND", "OR", "WITH"}
_LICENSE_BY_LOWER = {name.lower(): name for name in LICENSE_IDS}
_EXCEPTION_BY_LOWER = {name.lower(): name for name in EXCEPTION_IDS}


@dataclass(frozen=True)
class SbomPackage:
    """One installed apk package, as recorded in the installed database / APKINDEX."""

    name: str
    version: str
    arch: str
    license: str = ""
    origin: str = ""
    maintainer: str = ""
    checksum: str = ""
    sha256: str | None = None
    url: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class SbomBase:
    """The minirootfs tarball the image starts from."""

    name: str
    version: str
    url: str
    sha256: str


@dataclass(frozen=True)
class SbomDocument:
    """Inputs of both SBOM formats. ``alpine_release`` goes into each purl's ``distro``."""

    name: str
    created: int
    tool_version: str
    alpine_release: str
    packages: Sequence[SbomPackage]
    base: SbomBase | None = None
    extra_licenses: dict[str, str] = field(default_factory=dict)


def apk_purl(package: SbomPackage, alpine_release: str) -> str:
    """``pkg:apk/alpine/<name>@<version>?arch=<arch>&distro=alpine-<release>`` (purl spec)."""
    name = quote(package.name, safe="")
    version = quote(package.version, safe="")
    arch = quote(package.arch, safe="")
    distro = quote(f"alpine-{alpine_release}", safe="")
    return f"pkg:apk/alpine/{name}@{version}?arch={arch}&distro={distro}"


def apk_checksum_sha1(checksum: str, *, package: str) -> str:
    """Hex SHA-1 of an APK ``C:`` value (``Q1`` + base64 of the control section's SHA-1)."""
    if not checksum.startswith("Q1"):
        raise OutputError(f"SBOM: package {package!r} checksum {checksum!r} is not a Q1 (SHA-1) value")
    try:
        raw = base64.b64decode(checksum[2:], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise OutputError(f"SBOM: package {package!r} checksum {checksum!r} is not base64") from exc
    if len(raw) != 20:
        raise OutputError(f"SBOM: package {package!r} checksum {checksum!r} is not 20 bytes")
    return raw.hex()


@dataclass(frozen=True)
class LicenseExpression:
    """An SPDX expression plus the ``LicenseRef-`` ids it had to invent for free text."""

    expression: str
    refs: tuple[tuple[str, str], ...] = ()


def license_ref(text: str) -> str:
    return "LicenseRef-" + (_ID_UNSAFE.sub("-", text).strip("-") or "unknown")


def spdx_license_expression(raw: str) -> LicenseExpression | None:
    """Turn an apk ``license`` field into a valid SPDX expression.

    Alpine mostly writes SPDX already; older packages list ids separated by spaces
    (read as AND). Ids not on the SPDX list become ``LicenseRef-`` references; text
    that does not parse as an expression becomes one reference as a whole.
    """
    tokens = _LICENSE_TOKEN.findall(raw.strip())
    if not tokens:
        return None
    if not any(t.upper() in _OPERATORS for t in tokens) and "(" not in tokens:
        tokens = [part for t in tokens for part in (t, "AND")][:-1]
    refs: dict[str, str] = {}
    out: list[str] = []
    previous = ""
    for token in tokens:
        upper = token.upper()
        if token in ("(", ")"):
            out.append(token)
        elif upper in _OPERATORS:
            out.append(upper)
        elif previous == "WITH":
            exception = _EXCEPTION_BY_LOWER.get(token.lower())
            if exception is None:
                return _whole_ref(raw)
            out.append(exception)
        else:
            known = _LICENSE_BY_LOWER.get(token.lower())
            if known is None and token.startswith("LicenseRef-"):
                known = license_ref(token[len("LicenseRef-"):])
                refs[known] = token
            if known is None:
                known = license_ref(token)
                refs[known] = token
            out.append(known)
        previous = out[-1]
    if not _well_formed(out):
        return _whole_ref(raw)
    expression = " ".join(out).replace("( ", "(").replace(" )", ")")
    return LicenseExpression(expression, tuple(sorted(refs.items())))


def _whole_ref(raw: str) -> LicenseExpression:
    ref = license_ref(raw)
    return LicenseExpression(ref, ((ref, raw),))


def _well_formed(tokens: list[str]) -> bool:
    """expr := term ((AND|OR) term)* ; term := ID [WITH EXC] | '(' expr ')'."""
    position = 0

    def term() -> bool:
        nonlocal position
        if position >= len(tokens):
            return False
        token = tokens[position]
        if token == "(":
            position += 1
            if not expr() or position >= len(tokens) or tokens[position] != ")":
                return False
            position += 1
            return True
        if token in _OPERATORS or token == ")":
            return False
        position += 1
        if position < len(tokens) and tokens[position] == "WITH":
            position += 2
            return position <= len(tokens)
        return True

    def expr() -> bool:
        nonlocal position
        if not term():
            return False
        while position < len(tokens) and tokens[position] in ("AND", "OR"):
            position += 1
            if not term():
                return False
        return True

    return expr() and position == len(tokens)


def _spdx_id(prefix: str, *parts: str) -> str:
    return prefix + "-".join(_ID_UNSAFE.sub("-", p).strip("-") for p in parts)


def _sorted_packages(packages: Sequence[SbomPackage]) -> list[SbomPackage]:
    return sorted(packages, key=lambda p: (p.name, p.version, p.arch))


def _content_uuid(document: dict[str, Any]) -> uuid.UUID:
    digest = hashlib.sha256(_dump(document)).hexdigest()
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{SPDX_NAMESPACE_BASE}{digest}")


def _dump(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _split_maintainer(maintainer: str) -> tuple[str, str | None]:
    match = _MAINTAINER.match(maintainer)
    if match:
        return match["name"], match["email"]
    return maintainer.strip(), None


def _spdx_supplier(maintainer: str) -> str:
    if not maintainer.strip():
        return "Organization: Alpine Linux"
    name, email = _split_maintainer(maintainer)
    return f"Person: {name} ({email})" if email else f"Person: {name}"


def write_spdx_json(doc: SbomDocument) -> bytes:
    """SPDX 2.3 JSON: the image package DESCRIBES-d, CONTAINS every apk package."""
    packages: list[dict[str, Any]] = []
    relationships: list[dict[str, str]] = []
    extracted: dict[str, str] = dict(doc.extra_licenses)
    image_id = "SPDXRef-Image"
    packages.append({
        "SPDXID": image_id,
        "name": doc.name,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": False,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "supplier": "Organization: Alpine Linux",
    })
    relationships.append({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                          "relatedSpdxElement": image_id})
    if doc.base is not None:
        base_id = _spdx_id("SPDXRef-Base-", doc.base.name, doc.base.version)
        packages.append({
            "SPDXID": base_id,
            "name": doc.base.name,
            "versionInfo": doc.base.version,
            "downloadLocation": doc.base.url,
            "filesAnalyzed": False,
            "checksums": [{"algorithm": "SHA256", "checksumValue": doc.base.sha256}],
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": NOASSERTION,
            "copyrightText": NOASSERTION,
            "primaryPackagePurpose": "ARCHIVE",
            "supplier": "Organization: Alpine Linux",
        })
        relationships.append({"spdxElementId": image_id, "relationshipType": "DESCENDANT_OF",
                              "relatedSpdxElement": base_id})
    used_ids: set[str] = set()
    for package in _sorted_packages(doc.packages):
        spdx_id = _spdx_id("SPDXRef-Package-apk-", package.name, package.version, package.arch)
        while spdx_id in used_ids:
            spdx_id += "-x"
        used_ids.add(spdx_id)
        license_expr = spdx_license_expression(package.license)
        if license_expr is not None:
            extracted.update(license_expr.refs)
        entry: dict[str, Any] = {
            "SPDXID": spdx_id,
            "name": package.name,
            "versionInfo": package.version,
            "downloadLocation": NOASSERTION,
            "filesAnalyzed": False,
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": license_expr.expression if license_expr else NOASSERTION,
            "copyrightText": NOASSERTION,
            "supplier": _spdx_supplier(package.maintainer),
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": apk_purl(package, doc.alpine_release),
            }],
        }
        checksums = []
        if package.checksum:
            checksums.append({"algorithm": "SHA1",
                              "checksumValue": apk_checksum_sha1(package.checksum,
                                                                 package=package.name)})
        if package.sha256:
            checksums.append({"algorithm": "SHA256", "checksumValue": package.sha256})
        if checksums:
            entry["checksums"] = checksums
        if package.url:
            entry["homepage"] = package.url
        if package.description:
            entry["description"] = package.description
        if package.origin:
            entry["sourceInfo"] = f"built from Alpine origin package {package.origin}"
        packages.append(entry)
        relationships.append({"spdxElementId": image_id, "relationshipType": "CONTAINS",
                              "relatedSpdxElement": spdx_id})
    document: dict[str, Any] = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": doc.name,
        "documentNamespace": "",
        "creationInfo": {
            "created": rfc3339(doc.created),
            "creators": [f"Tool: {TOOL_NAME}-{doc.tool_version}"],
        },
        "packages": packages,
        "relationships": relationships,
    }
    if extracted:
        document["hasExtractedLicensingInfos"] = [
            {"licenseId": ref, "extractedText": text, "name": text}
            for ref, text in sorted(extracted.items())]
    slug = _ID_UNSAFE.sub("-", doc.name).strip("-") or "image"
    document["documentNamespace"] = f"{SPDX_NAMESPACE_BASE}{slug}-{_content_uuid(document)}"
    return _dump(document)


def _cyclonedx_supplier(maintainer: str) -> dict[str, Any]:
    if not maintainer.strip():
        return {"name": "Alpine Linux", "url": ["https://alpinelinux.org"]}
    name, email = _split_maintainer(maintainer)
    contact: dict[str, str] = {"name": name}
    if email:
        contact["email"] = email
    return {"name": name, "contact": [contact]}


def write_cyclonedx_json(doc: SbomDocument) -> bytes:
    """CycloneDX 1.5 JSON: one ``library`` component per apk package, with purl and hashes."""
    components: list[dict[str, Any]] = []
    refs: list[str] = []
    if doc.base is not None:
        base_ref = f"base:{doc.base.name}@{doc.base.version}"
        components.append({
            "type": "file",
            "bom-ref": base_ref,
            "name": doc.base.name,
            "version": doc.base.version,
            "hashes": [{"alg": "SHA-256", "content": doc.base.sha256}],
            "externalReferences": [{"type": "distribution", "url": doc.base.url}],
            "supplier": {"name": "Alpine Linux", "url": ["https://alpinelinux.org"]},
        })
        refs.append(base_ref)
    for package in _sorted_packages(doc.packages):
        purl = apk_purl(package, doc.alpine_release)
        component: dict[str, Any] = {
            "type": "library",
            "bom-ref": purl,
            "name": package.name,
            "version": package.version,
            "purl": purl,
            "supplier": _cyclonedx_supplier(package.maintainer),
        }
        license_expr = spdx_license_expression(package.license)
        if license_expr is not None:
            component["licenses"] = [{"expression": license_expr.expression}]
        hashes = []
        if package.checksum:
            hashes.append({"alg": "SHA-1",
                           "content": apk_checksum_sha1(package.checksum, package=package.name)})
        if package.sha256:
            hashes.append({"alg": "SHA-256", "content": package.sha256})
        if hashes:
            component["hashes"] = hashes
        if package.description:
            component["description"] = package.description
        if package.url:
            component["externalReferences"] = [{"type": "website", "url": package.url}]
        properties = [{"name": "alpine:arch", "value": package.arch}]
        if package.origin:
            properties.append({"name": "alpine:origin", "value": package.origin})
        component["properties"] = properties
        components.append(component)
        refs.append(purl)
    document: dict[str, Any] = {
        "$schema": "http://cyclonedx.org/schema/bom-1.5.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": "",
        "version": 1,
        "metadata": {
            "timestamp": rfc3339(doc.created),
            "tools": {"components": [
                {"type": "application", "name": TOOL_NAME, "version": doc.tool_version}]},
            "component": {"type": "operating-system", "bom-ref": "image", "name": doc.name},
        },
        "components": components,
        "dependencies": [{"ref": "image", "dependsOn": refs}]
        + [{"ref": ref} for ref in refs],
    }
    document["serialNumber"] = f"urn:uuid:{_content_uuid(document)}"
    return _dump(document)
