from __future__ import annotations

import pytest

from composer.errors import ArchiveError, NotFoundError, VerificationError
from composer.sources.releases import (
    ReleaseImage,
    parse_checksum_file,
    parse_latest_releases,
    select_release,
)
from tests.helpers.mirror import latest_releases_yaml

SHA = "d4e6fd67dcf75e40c451560ac7265166c2b72a0f38ddc9aae756a7de3d1efa0c"
SRC = "https://mirror.example/alpine/v3.20/releases/x86_64/latest-releases.yaml"

# Shaped like the published file: '---', a Netboot entry with no file, quoted
# multi-line desc, 'iso' legacy key, date/time keys.
REAL_SHAPED = f"""---
-
  title: "Netboot"
  desc: "Kernel, initramfs and modloop for
    netboot.
    "
  branch: v3.20
  arch: x86_64
-
  title: "Mini root filesystem"
  desc: "Minimal root filesystem.
    For use in containers
    and minimal chroots.
    "
  branch: v3.20
  arch: x86_64
  version: 3.20.3
  flavor: alpine-minirootfs
  file: alpine-minirootfs-3.20.3-x86_64.tar.gz
  iso: alpine-minirootfs-3.20.3-x86_64.tar.gz
  date: 2024-09-06
  time: 11:34:40.000000000 +0000
  size: 3490290
  sha256: {SHA}
  sha512: {"9d" * 64}
""".encode()


def test_parse_real_shaped_file() -> None:
    images = parse_latest_releases(REAL_SHAPED, source=SRC)
    assert images == [
        ReleaseImage(
            branch="v3.20", arch="x86_64", version="3.20.3", flavor="alpine-minirootfs",
            file="alpine-minirootfs-3.20.3-x86_64.tar.gz", size=3490290, sha256=SHA,
            sha512="9d" * 64, date="2024-09-06",
        )
    ]
    chosen = select_release(images, flavor="alpine-minirootfs", arch="x86_64", version=None)
    assert chosen.size == 3490290


def test_helper_yaml_parses_with_iso_entry() -> None:
    data = latest_releases_yaml(branch="v3.21", arch="aarch64", version="3.21.0",
                                filename="alpine-minirootfs-3.21.0-aarch64.tar.gz", size=5,
                                sha256="a" * 64, sha512="b" * 128)
    images = parse_latest_releases(data, source=SRC)
    assert [(i.flavor, i.version, i.arch) for i in images] == [
        ("alpine-minirootfs", "3.21.0", "aarch64"), ("alpine-standard", "3.21.0", "aarch64")
    ]


def test_version_strings_are_not_turned_into_floats() -> None:
    data = b"- {flavor: alpine-minirootfs, version: 3.20, file: f.tar.gz, arch: x86_64}\n"
    assert parse_latest_releases(data, source=SRC)[0].version == "3.20"


def test_missing_optional_keys_and_extra_keys() -> None:
    data = (b"- flavor: alpine-minirootfs\n  version: '3.19.1'\n  iso: a.tar.gz\n"
            b"  future_key: whatever\n- just a string\n- {title: only}\n")
    (image,) = parse_latest_releases(data, source=SRC)
    assert (image.file, image.size, image.sha256, image.branch) == ("a.tar.gz", None, None, "")


def test_empty_document_has_no_images() -> None:
    assert parse_latest_releases(b"", source=SRC) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"- [unclosed\n", f"latest-releases.yaml at {SRC}: invalid YAML at line 2"),
        (b"flavor: x\n", f"latest-releases.yaml at {SRC}: expected a list of images, got dict"),
        (b"- {flavor: f, version: '1', file: x, size: big}\n",
         f"latest-releases.yaml at {SRC}: entry 0 (x): size 'big' is not a number"),
        (b"- {flavor: f, version: '1', file: x, sha256: abc}\n",
         f"latest-releases.yaml at {SRC}: entry 0 (x): sha256 'abc' is not 64 hex digits"),
        (b"- {flavor: f, version: '1', file: ../x}\n",
         f"latest-releases.yaml at {SRC}: entry 0 (../x): file name must not contain a path"),
    ],
)
def test_malformed_files(data: bytes, message: str) -> None:
    with pytest.raises(ArchiveError) as err:
        parse_latest_releases(data, source=SRC)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def image(version: str, arch: str = "x86_64", flavor: str = "alpine-minirootfs") -> ReleaseImage:
    return ReleaseImage(branch="v3.20", arch=arch, version=version, flavor=flavor,
                        file=f"{flavor}-{version}-{arch}.tar.gz", size=1, sha256=None,
                        sha512=None, date=None)


def test_select_newest_numerically_and_pinned() -> None:
    images = [image("3.20.9"), image("3.20.10"), image("3.20.2", arch="aarch64"),
              image("3.20.11", flavor="alpine-virt")]
    def pick(version: str | None) -> str:
        return select_release(images, flavor="alpine-minirootfs", arch="x86_64", version=version).version

    assert pick(None) == "3.20.10"
    assert pick("3.20.9") == "3.20.9"


def test_select_reports_missing_flavor_and_version() -> None:
    images = [image("3.20.3"), image("3.20.2", arch="aarch64")]
    with pytest.raises(NotFoundError) as err:
        select_release(images, flavor="alpine-minirootfs", arch="s390x", version=None, source=SRC)
    assert str(err.value) == f"latest-releases.yaml at {SRC} has no alpine-minirootfs entry for s390x"
    with pytest.raises(NotFoundError) as err:
        select_release(images, flavor="alpine-minirootfs", arch="x86_64", version="3.20.1", source=SRC)
    assert str(err.value) == (
        f"latest-releases.yaml at {SRC} has no alpine-minirootfs 3.20.1 for x86_64 (lists 3.20.3)"
    )


NAME = "alpine-minirootfs-3.20.3-x86_64.tar.gz"


@pytest.mark.parametrize(
    "text",
    [
        f"{SHA}  {NAME}\n",
        f"{SHA.upper()}  {NAME}\n",
        f"{SHA} *{NAME}\n",
        f"{SHA}  /home/buildozer/out/{NAME}\n",
        f"{SHA}\n",
        f"{'0' * 64}  other.iso\n{SHA}  {NAME}\n",
    ],
)
def test_checksum_file_variants(text: str) -> None:
    assert parse_checksum_file(text.encode(), filename=NAME, source="x.sha256") == SHA


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "checksum file x.sha256 has no entry for " + NAME + " (lists nothing)"),
        (f"{SHA}  other.tar.gz\n", f"checksum file x.sha256 has no entry for {NAME} (lists other.tar.gz)"),
        ("<html>404</html>\n",
         "checksum file x.sha256: line '<html>404</html>' does not start with a sha256 digest"),
        (f"{SHA}  {NAME}\n{'1' * 64}  {NAME}\n",
         f"checksum file x.sha256 lists {NAME} with different digests"),
    ],
)
def test_checksum_file_errors(text: str, message: str) -> None:
    with pytest.raises(VerificationError) as err:
        parse_checksum_file(text.encode(), filename=NAME, source="x.sha256")
    assert str(err.value) == message
