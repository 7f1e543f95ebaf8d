"""SPDX 2.3 and CycloneDX 1.5 writers, checked with the official libraries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from composer.apk.db import parse_installed, q1_from_hex
from composer.errors import OutputError
from composer.stages.sbom_outputs import sbom_packages_from_installed
from composer.writers.sbom import (
    SbomBase,
    SbomDocument,
    SbomPackage,
    apk_checksum_sha1,
    apk_purl,
    spdx_license_expression,
    write_cyclonedx_json,
    write_spdx_json,
)

from .oci_trees import SHARED

INSTALLED = SHARED / "fixtures/alpine-real/rootfs-3.20.3-x86_64-extracted/lib_apk_db_installed"
BASE = SbomBase(
    name="alpine-minirootfs", version="3.20.3",
    url="https://dl-cdn.alpinelinux.org/alpine/v3.20/releases/x86_64/alpine-minirootfs-3.20.3-x86_64.tar.gz",
    sha256="d4e6fd67dcf75e40c451560ac7265166c2b72a0f38ddc9aae756a7de3d1efa0c")
CREATED = 1725622440

HANDMADE = [
    SbomPackage(name="musl", version="1.2.5-r0", arch="x86_64", license="MIT", origin="musl",
                maintainer="Timo Teräs <timo.teras@iki.fi>",
                checksum=q1_from_hex("00" * 19 + "01"), sha256="ab" * 32,
                url="https://musl.libc.org/", description="the musl c library"),
    SbomPackage(name="libstdc++", version="13.2.1_git20240309-r0", arch="x86_64",
                license="GPL-2.0-or-later WITH GCC-exception-3.1", origin="gcc"),
    SbomPackage(name="oldpkg", version="1.0-r0", arch="x86_64", license="custom BSD",
                maintainer="nobody"),
]


def document(packages: list[SbomPackage] | None = None) -> SbomDocument:
    return SbomDocument(name="alpine-3.20", created=CREATED, tool_version="0.1.0",
                        alpine_release="3.20.3", packages=packages or HANDMADE, base=BASE)


def validate_spdx(data: bytes, tmp_path: Path) -> list[object]:
    path = tmp_path / "sbom.spdx.json"
    path.write_bytes(data)
    return list(validate_full_spdx_document(parse_file(str(path))))


def validate_cyclonedx(data: bytes) -> object:
    return JsonStrictValidator(SchemaVersion.V1_5).validate_str(data.decode())


def test_purls_are_exact() -> None:
    assert [apk_purl(p, "3.20.3") for p in HANDMADE] == [
        "pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64&distro=alpine-3.20.3",
        "pkg:apk/alpine/libstdc%2B%2B@13.2.1_git20240309-r0?arch=x86_64&distro=alpine-3.20.3",
        "pkg:apk/alpine/oldpkg@1.0-r0?arch=x86_64&distro=alpine-3.20.3"]


def test_license_expressions() -> None:
    assert spdx_license_expression("") is None
    simple = spdx_license_expression("MPL-2.0 AND MIT")
    assert simple is not None and (simple.expression, simple.refs) == ("MPL-2.0 AND MIT", ())
    spaced = spdx_license_expression("mit BSD-2-Clause")
    assert spaced is not None and spaced.expression == "MIT AND BSD-2-Clause"
    custom = spdx_license_expression("custom BSD")
    assert custom is not None
    assert custom.expression == "LicenseRef-custom AND LicenseRef-BSD"
    assert custom.refs == (("LicenseRef-BSD", "BSD"), ("LicenseRef-custom", "custom"))
    nested = spdx_license_expression("(MIT OR Apache-2.0) AND GPL-2.0-only WITH Linux-syscall-note")
    assert nested is not None
    assert nested.expression == "(MIT OR Apache-2.0) AND GPL-2.0-only WITH Linux-syscall-note"
    broken = spdx_license_expression("MIT OR")
    assert broken is not None and broken.expression == "LicenseRef-MIT-OR"


def test_apk_checksum_to_sha1() -> None:
    assert apk_checksum_sha1(q1_from_hex("0123456789abcdef0123456789abcdef01234567"),
                             package="x") == "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(OutputError, match="package 'x' checksum 'Q2abc' is not a Q1"):
        apk_checksum_sha1("Q2abc", package="x")
    with pytest.raises(OutputError, match="is not 20 bytes"):
        apk_checksum_sha1("Q1AAAA", package="x")


def test_spdx_is_valid_deterministic_and_complete(tmp_path: Path) -> None:
    data = write_spdx_json(document())
    assert data == write_spdx_json(document())
    assert data == write_spdx_json(document(list(reversed(HANDMADE))))
    assert validate_spdx(data, tmp_path) == []
    doc = json.loads(data)
    assert doc["spdxVersion"] == "SPDX-2.3"
    assert doc["creationInfo"] == {"created": "2024-09-06T11:34:00Z",
                                   "creators": ["Tool: alpine-composer-0.1.0"]}
    assert doc["documentNamespace"].startswith("https://alpine-composer.invalid/spdxdocs/alpine-3.20-")
    by_name = {p["name"]: p for p in doc["packages"]}
    musl = by_name["musl"]
    assert musl["SPDXID"] == "SPDXRef-Package-apk-musl-1.2.5-r0-x86-64"
    assert musl["externalRefs"] == [{
        "referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
        "referenceLocator": "pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64&distro=alpine-3.20.3"}]
    assert musl["checksums"] == [{"algorithm": "SHA1", "checksumValue": "00" * 19 + "01"},
                                 {"algorithm": "SHA256", "checksumValue": "ab" * 32}]
    assert musl["supplier"] == "Person: Timo Teräs (timo.teras@iki.fi)"
    assert by_name["alpine-minirootfs"]["downloadLocation"] == BASE.url
    assert by_name["oldpkg"]["licenseDeclared"] == "LicenseRef-custom AND LicenseRef-BSD"
    relations = {(r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"])
                 for r in doc["relationships"]}
    assert ("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Image") in relations
    assert {r for r in relations if r[1] == "CONTAINS"} == {
        ("SPDXRef-Image", "CONTAINS", p["SPDXID"]) for p in doc["packages"]
        if p["SPDXID"].startswith("SPDXRef-Package-apk-")}
    assert len({p["SPDXID"] for p in doc["packages"]}) == len(doc["packages"]) == 5


def test_spdx_namespace_follows_content() -> None:
    first = json.loads(write_spdx_json(document()))["documentNamespace"]
    other = json.loads(write_spdx_json(document(HANDMADE[:2])))["documentNamespace"]
    assert first != other


def test_spdx_validator_is_live(tmp_path: Path) -> None:
    doc = json.loads(write_spdx_json(document()))
    doc["relationships"].append({"spdxElementId": "SPDXRef-Image", "relationshipType": "CONTAINS",
                                 "relatedSpdxElement": "SPDXRef-Nowhere"})
    assert validate_spdx(json.dumps(doc).encode(), tmp_path) != []


def test_cyclonedx_is_valid_deterministic_and_complete() -> None:
    data = write_cyclonedx_json(document())
    assert data == write_cyclonedx_json(document(list(reversed(HANDMADE))))
    assert validate_cyclonedx(data) is None
    bom = json.loads(data)
    assert bom["specVersion"] == "1.5"
    assert bom["serialNumber"].startswith("urn:uuid:")
    assert bom["metadata"]["timestamp"] == "2024-09-06T11:34:00Z"
    by_name = {c["name"]: c for c in bom["components"]}
    assert [c["purl"] for c in bom["components"] if "purl" in c] == [
        "pkg:apk/alpine/libstdc%2B%2B@13.2.1_git20240309-r0?arch=x86_64&distro=alpine-3.20.3",
        "pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64&distro=alpine-3.20.3",
        "pkg:apk/alpine/oldpkg@1.0-r0?arch=x86_64&distro=alpine-3.20.3"]
    assert by_name["libstdc++"]["licenses"] == [
        {"expression": "GPL-2.0-or-later WITH GCC-exception-3.1"}]
    assert by_name["musl"]["supplier"] == {
        "name": "Timo Teräs", "contact": [{"name": "Timo Teräs", "email": "timo.teras@iki.fi"}]}
    assert by_name["musl"]["hashes"] == [{"alg": "SHA-1", "content": "00" * 19 + "01"},
                                         {"alg": "SHA-256", "content": "ab" * 32}]
    assert by_name["alpine-minirootfs"]["hashes"] == [{"alg": "SHA-256", "content": BASE.sha256}]
    other = json.loads(write_cyclonedx_json(document(HANDMADE[:1])))["serialNumber"]
    assert other != bom["serialNumber"]


def test_cyclonedx_validator_is_live() -> None:
    bom = json.loads(write_cyclonedx_json(document()))
    bom["components"][0]["type"] = "not-a-type"
    assert validate_cyclonedx(json.dumps(bom).encode()) is not None


@pytest.mark.skipif(not INSTALLED.is_file(),
                    reason=f"real Alpine fixtures not found at {INSTALLED} (needs ../shared)")
def test_real_installed_database(tmp_path: Path) -> None:
    packages = sbom_packages_from_installed(parse_installed(INSTALLED.read_bytes()))
    assert len(packages) == 14
    doc = document(packages)
    spdx = write_spdx_json(doc)
    cdx = write_cyclonedx_json(doc)
    assert validate_spdx(spdx, tmp_path) == []
    assert validate_cyclonedx(cdx) is None
    purls = {c["name"]: c["purl"] for c in json.loads(cdx)["components"] if "purl" in c}
    assert purls["busybox"] == "pkg:apk/alpine/busybox@1.36.1-r29?arch=x86_64&distro=alpine-3.20.3"
    assert purls["ca-certificates-bundle"] == (
        "pkg:apk/alpine/ca-certificates-bundle@20240705-r0?arch=x86_64&distro=alpine-3.20.3")
    spdx_doc = json.loads(spdx)
    assert "hasExtractedLicensingInfos" not in spdx_doc
    musl_utils = next(p for p in spdx_doc["packages"] if p["name"] == "musl-utils")
    assert musl_utils["licenseDeclared"] == "MIT AND BSD-2-Clause AND GPL-2.0-or-later"
