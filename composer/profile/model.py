"""What users write: the profile, as frozen, strict pydantic models.

Every model forbids unknown keys and is immutable once loaded; checks that need
the filesystem (does an overlay source exist?) happen later, in ``check``.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from composer.profile.layers import is_removal
from composer.profile.logins import check_password_hash, check_public_key
from composer.urls import is_url

ALPINE_RELEASE_FINGERPRINT = "0482D84022F52DF1C4E7CD43293ACD0907D9495A"
ALPINE_RELEASE_KEY_URL = "https://alpinelinux.org/keys/ncopa.asc"
DEFAULT_MIRROR = "https://dl-cdn.alpinelinux.org/alpine"

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_BRANCH = re.compile(r"^(v\d+\.\d+|edge|latest-stable)$")
_RELEASE = re.compile(r"^[0-9][0-9A-Za-z._-]*$")


class Strict(BaseModel):
    """Unknown keys refused, frozen once loaded. Validators are built when a profile is first
    validated (``defer_build``): one schema for the whole profile instead of one per model
    at import, a few milliseconds of every run."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class Variant(enum.StrEnum):
    """Presets that fill defaults (see ``variants.py`` and the README)."""

    MINIROOTFS = "minirootfs"
    VIRT = "virt"
    STANDARD = "standard"
    EDGE = "edge"


class Arch(enum.StrEnum):
    """Alpine architecture names."""

    X86_64 = "x86_64"
    X86 = "x86"
    AARCH64 = "aarch64"
    ARMV7 = "armv7"
    ARMHF = "armhf"
    PPC64LE = "ppc64le"
    S390X = "s390x"
    RISCV64 = "riscv64"
    LOONGARCH64 = "loongarch64"


class Base(enum.StrEnum):
    """What the rootfs starts from."""

    MINIROOTFS = "minirootfs"
    PACKAGES = "packages"


class Firmware(enum.StrEnum):
    """The firmware an ISO boots from."""

    BIOS = "bios"
    UEFI = "uefi"


class EfiLoader(enum.StrEnum):
    """How UEFI firmware gets from the ISO's FAT image to the kernel."""

    UKI = "uki"
    SYSLINUX = "syslinux"


class Compression(enum.StrEnum):
    """The compressions an archive output may use (the writers take the same enum)."""

    GZIP = "gzip"
    ZSTD = "zstd"
    XZ = "xz"
    NONE = "none"

    @property
    def suffix(self) -> str:
        """What the compression adds to a file name (``.tar`` + this)."""
        return {"gzip": ".gz", "zstd": ".zst", "xz": ".xz", "none": ""}[self.value]


class LayerCompression(enum.StrEnum):
    GZIP = "gzip"
    ZSTD = "zstd"
    NONE = "none"


def _parse_mode(value: Any) -> Any:
    """Accept the strings '0644', '644', '0o644' and, from YAML, 0644 and 644 alike (octal, as
    users mean them); a YAML number with the digits 8 or 9 is refused with a hint."""
    if isinstance(value, bool):
        raise ValueError("a mode must be an octal number like '0644'")
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        if not re.fullmatch(r"[0-7]{1,4}", text):
            raise ValueError(f"{value!r} is not an octal mode like '0644'")
        return int(text, 8)
    written = getattr(value, "written", None)
    if isinstance(value, int) and isinstance(written, str):
        text = written.replace("_", "").lstrip("+")
        if text.startswith("0"):  # 0644 (YAML 1.1 octal) or 0x1ed: already the number meant
            return int(value)
        if re.fullmatch(r"[0-7]{1,4}", text):  # 644: octal digits, as chmod reads them
            return int(text, 8)
        raise ValueError(f"{written} is not an octal mode: write modes in octal, e.g. '0644'")
    return value


Mode = Annotated[int, BeforeValidator(_parse_mode, json_schema_input_type=str | int),
                 Field(ge=0, le=0o7777)]
Id = Annotated[int, Field(ge=0, le=2**31 - 1)]


def _image_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} must be an absolute path inside the image (start with '/')")
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"{value!r} must not contain '..'")
    if not parts:
        raise ValueError("the image root itself cannot be named here")
    return "/" + "/".join(parts)


ImagePath = Annotated[str, AfterValidator(_image_path)]


class Trust(Strict):
    """Where the release key comes from and which fingerprint it must have."""

    fingerprint: str = ALPINE_RELEASE_FINGERPRINT
    key: str = ALPINE_RELEASE_KEY_URL
    allow_unsigned: bool = Field(
        default=False,
        description="Accept a release published without an .asc signature, on its sha256 alone "
                    "(logged loudly). Off by default.")

    @field_validator("fingerprint")
    @classmethod
    def _fingerprint(cls, value: str) -> str:
        compact = value.replace(" ", "").upper()
        if not re.fullmatch(r"[0-9A-F]{40}", compact):
            raise ValueError("expected a 40-hex-digit OpenPGP v4 fingerprint")
        return compact


class FileSpec(Strict):
    path: ImagePath
    source: str | None = None
    content: str | None = None
    mode: Mode = 0o644
    uid: Id = 0
    gid: Id = 0
    arch: list[Arch] | None = Field(default=None, description="Write the file only into the "
                                    "images of these architectures (default: all).")

    @model_validator(mode="after")
    def _one_source(self) -> FileSpec:
        if (self.source is None) == (self.content is None):
            raise ValueError("give exactly one of 'source' (a file next to the profile) or 'content'")
        return self


class DirectorySpec(Strict):
    path: ImagePath
    mode: Mode = 0o755
    uid: Id = 0
    gid: Id = 0


class SymlinkSpec(Strict):
    path: ImagePath
    target: str = Field(min_length=1)


def _str_to_dir(value: Any) -> Any:
    return {"path": value} if isinstance(value, str) and not is_removal(value) else value


def _no_removals(value: Any) -> Any:
    """A ``-item`` entry left after the layers merged removed nothing: say so here, where
    the error names the field."""
    if isinstance(value, list):
        for item in value:
            if is_removal(item):
                raise ValueError(f"{item!r} removes nothing: no lower layer (the variant's preset "
                                 "or a profile this one extends) lists "
                                 f"{item[1:]!r}")
    return value


Removal = Annotated[str, Field(pattern=r"^-.+", description="Removes an entry a lower layer "
                                                            "(the variant's preset or an extended "
                                                            "profile) added.")]


class Overlay(Strict):
    """Files laid over the rootfs after packages. Applied in this order: remove, tree,
    directories, files, symlinks, hostname."""

    remove: list[ImagePath] = []
    tree: list[str] = Field(default=[], description="Folders (relative to the profile) copied "
                                                    "into the image root with their modes; owned by root.")
    directories: Annotated[list[Annotated[DirectorySpec, BeforeValidator(
        _str_to_dir, json_schema_input_type=str | DirectorySpec)]],
        BeforeValidator(_no_removals, json_schema_input_type=list[str | DirectorySpec])] = []
    files: Annotated[list[FileSpec], BeforeValidator(
        _no_removals, json_schema_input_type=list[FileSpec | Removal])] = []
    symlinks: Annotated[list[SymlinkSpec], BeforeValidator(
        _no_removals, json_schema_input_type=list[SymlinkSpec | Removal])] = []
    hostname: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")

    @field_validator("tree", mode="before", json_schema_input_type=str | list[str])
    @classmethod
    def _tree_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _paths_once(self) -> Overlay:
        for kind, entries in (("files", self.files), ("directories", self.directories),
                              ("symlinks", self.symlinks)):
            seen: dict[str, set[Arch] | None] = {}
            for entry in entries:
                arches = set(getattr(entry, "arch", None) or []) or None
                if entry.path in seen:
                    before = seen[entry.path]
                    if before is None or arches is None or before & arches:
                        raise ValueError(f"{kind}: {entry.path} is listed twice"
                                         + (" for one architecture" if arches else ""))
                    arches = before | arches
                seen[entry.path] = arches
        return self


class TarOutput(Strict):
    format: Literal["tar"]
    compression: Compression = Compression.GZIP


class OciOutput(Strict):
    format: Literal["oci", "oci-archive"]
    tag: str = Field(default="latest", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    compression: LayerCompression = LayerCompression.GZIP
    layering: Literal["single", "stages"] = Field(
        default="single",
        description="single: the whole rootfs as one layer. stages: one layer per build stage "
                    "(the base as released, what the packages change, what accounts, services "
                    "and the overlay change), so images from the same base share its layer.")


class DockerArchiveOutput(Strict):
    format: Literal["docker-archive"]
    tag: str = Field(default="latest", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class IsoOutput(Strict):
    """A bootable hybrid ISO: BIOS and/or UEFI, from a CD drive or as a disk."""

    format: Literal["iso"]
    boot: list[Firmware] | None = Field(
        default=None, min_length=1, description="Firmware the ISO boots on (default: bios and "
        "uefi on x86, uefi elsewhere).")
    kernel: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$",
                               description="Kernel flavor: the ISO boots /boot/vmlinuz-<kernel> "
                                           "(default: virt for the virt variant, else lts).")
    cmdline: str | None = Field(default=None, description="Kernel command line (default: "
                                "the variant's serial and screen consoles, quiet).")
    label: str | None = Field(default=None, description="ISO volume id (at most 32 characters); "
                              "default alpine-<variant> <release> <arch>.")
    timeout: int = Field(default=1, ge=0, le=3600,
                         description="Seconds the BIOS boot prompt waits; 0 boots at once.")
    efi_loader: EfiLoader = Field(
        default=EfiLoader.UKI, description="uki: the kernel, initramfs and cmdline on gummiboot's EFI "
                                   "stub. syslinux is refused with boot: uefi (syslinux.efi "
                                   "faults under UEFI firmware started from a CD drive).")


class DiskImage(enum.StrEnum):
    RAW = "raw"
    QCOW2 = "qcow2"


class SecureBoot(Strict):
    """The Authenticode identity that signs the disk's unified kernel image. The key is read
    from a file or from an environment variable, never from the command line, and never
    enters an output or the manifest."""

    key: str | None = Field(default=None, min_length=1, description="PEM private key file "
                            "(relative to the profile).")
    key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                description="Name of an environment variable holding the PEM "
                                "private key, instead of key.")
    cert: str = Field(min_length=1, description="PEM X.509 certificate of the key (relative to "
                      "the profile); enroll it in the firmware's db.")

    @model_validator(mode="after")
    def _one_key(self) -> SecureBoot:
        if (self.key is None) == (self.key_env is None):
            raise ValueError("secure_boot: give exactly one of key (a PEM file) or key_env (an "
                             "environment variable holding the PEM key)")
        return self


class DataPartition(Strict):
    """A persistent partition, formatted (ext4) on first boot and mounted at ``mount``."""

    mount: str = Field(pattern=r"^/[A-Za-z0-9._/+-]*[A-Za-z0-9._+-]$",
                       description="Where the booted system mounts it, e.g. /data.")
    size: ByteSize = Field(description="Partition size, e.g. 1GiB.")


class DiskOutput(Strict):
    """A GPT disk image: an EFI system partition with a unified kernel image, a read-only
    squashfs root and (with verity) its dm-verity hash partition."""

    format: Literal["disk"]
    image: DiskImage = Field(default=DiskImage.RAW, description="raw (for dd) or qcow2.")
    size: ByteSize | None = Field(default=None, description="Whole disk size, e.g. 2GiB "
                                  "(default: what the partitions need).")
    verity: bool = Field(default=True, description="A dm-verity hash partition; the root hash "
                         "on the kernel command line inside the UKI.")
    secure_boot: SecureBoot | None = Field(default=None, description="Sign the UKI for Secure "
                                           "Boot (default: unsigned).")
    kernel: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$",
                               description="Kernel flavor (default: virt for the virt variant, "
                               "else lts).")
    cmdline: str | None = Field(default=None, description="Kernel command line (default: the "
                                "variant's consoles); the root and verity arguments are added.")
    data: DataPartition | None = Field(default=None, description="A persistent data partition "
                                       "(needs package e2fsprogs, added by the plan).")


Output = Annotated[TarOutput | OciOutput | DockerArchiveOutput | IsoOutput | DiskOutput,
                   Field(discriminator="format")]


def output_formats() -> tuple[str, ...]:
    """Every ``format`` value the Output union accepts, read from the union itself."""
    union = get_args(Output)[0]
    return tuple(fmt for model in get_args(union)
                 for fmt in get_args(model.model_fields["format"].annotation))


class ImageConfig(Strict):
    """OCI image configuration (used by oci, oci-archive and docker-archive outputs)."""

    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: dict[str, str] = {}
    labels: dict[str, str] = {}
    working_dir: str | None = None
    user: str | None = None
    exposed_ports: list[Annotated[str, Field(pattern=r"^\d{1,5}(/(tcp|udp|sctp))?$")]] = []
    volumes: list[str] = []
    stop_signal: str | None = None
    revision: str | None = Field(default=None, description="org.opencontainers.image.revision")
    source: str | None = Field(default=None, description="org.opencontainers.image.source")


class PinnedKey(Strict):
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Repository(Strict):
    """A package repository: a name of the branch's (main, community, testing) or a URL."""

    url: str
    tag: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]+$")
    image_url: str | None = Field(default=None, description="What the image's "
                                  "/etc/apk/repositories names this repository (default: its "
                                  "URL, moved from 'mirror' to 'image_mirror').")
    in_image: bool = Field(default=True, description="false: install from this repository, "
                           "but leave it out of the image's /etc/apk/repositories.")

    @field_validator("image_url")
    @classmethod
    def _image_url(cls, value: str | None) -> str | None:
        if value is not None and not is_url(value):
            raise ValueError("expected an http://, https:// or file:// URL")
        return value.rstrip("/") if value is not None else None

    @model_validator(mode="after")
    def _image_url_or_left_out(self) -> Repository:
        if self.image_url is not None and not self.in_image:
            raise ValueError("give image_url or in_image: false, not both")
        return self


def _repository(value: Any) -> Any:
    if isinstance(value, str):
        if value.startswith("@"):
            tag, _, url = value[1:].partition(" ")
            return {"url": url.strip(), "tag": tag}
        return {"url": value}
    return value


class Group(Strict):
    name: str = Field(pattern=r"^[a-z_][a-z0-9_-]*$")
    gid: Id | None = None


PasswordHash = Annotated[str, AfterValidator(check_password_hash), Field(
    description="A SHA-512 crypt hash ($6$…, from `openssl passwd -6`); never the password. "
                "Left out, the account has no password (locked).")]
PublicKey = Annotated[str, AfterValidator(check_public_key)]


class Login(Strict):
    """How an account is logged into: a password hash and SSH public keys."""

    password: PasswordHash | None = None
    ssh_authorized_keys: list[PublicKey] = Field(
        default=[], description="Public key lines (as in a .pub file) written to "
                                "~/.ssh/authorized_keys (folder 0700, file 0600, owned by the user).")


class User(Login):
    name: str = Field(pattern=r"^[a-z_][a-z0-9_-]*$")
    uid: Id | None = None
    group: str | None = None
    groups: list[str] = []
    home: str | None = None
    shell: str = "/bin/sh"
    gecos: str = ""
    create_home: bool = Field(default=True, description="Create the home folder as adduser does "
                              "(mode 2755, owned by the user, /etc/skel copied in).")


class Root(Login):
    """root's logins. Without any, root is locked (``*``), as in Alpine's minirootfs."""

    console_login_without_password: bool = Field(
        default=False, description="Alpine's ISO behaviour: root logs in without a password on "
        "the consoles listed in /etc/securetty (never over SSH). Off by default.")

    @model_validator(mode="after")
    def _one_way(self) -> Root:
        if self.console_login_without_password and self.password is not None:
            raise ValueError("give a password or console_login_without_password: true, not both")
        return self


class Accounts(Strict):
    root: Root = Root()
    groups: list[Group] = []
    users: list[User] = []


Runlevel = Literal["sysinit", "boot", "default", "shutdown", "nonetwork"]


def _schema_extras(schema: dict[str, Any]) -> None:
    """Keys the loader reads before validation, so that editors accept them too."""
    schema.setdefault("properties", {})["extends"] = {
        "type": "string",
        "description": "Another profile file (relative to this one) that this one is laid over."}


class Profile(Strict):
    """A declarative description of one image. See README.md for every field."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True,
                              json_schema_extra=_schema_extras)

    name: str = Field(description="Image name; also the out/ folder name.")
    variant: Variant = Variant.MINIROOTFS
    branch: str = "latest-stable"
    release: str | None = Field(default=None, description="Exact release (e.g. 3.20.3); default: "
                                                          "newest for the branch.")
    arch: list[Arch] = [Arch.X86_64]
    mirror: str = Field(default=DEFAULT_MIRROR, description=(
        "Where inputs are fetched from (http://, https:// or file://); never named in an output."))
    image_mirror: str = Field(default=DEFAULT_MIRROR, description=(
        "The Alpine mirror the outputs name: the image's /etc/apk/repositories, the OCI base "
        "annotation and the SBOMs' download locations. URLs under 'mirror' are rewritten to it."))
    trust: Trust = Trust()
    base: Base = Base.MINIROOTFS
    packages: Annotated[list[str], BeforeValidator(
        _no_removals, json_schema_input_type=list[str])] = Field(
        default=[], description="Packages to install, added to the variant's; '-name' removes one "
                                "the variant (or an extended profile) adds.")
    repositories: list[Annotated[Repository, BeforeValidator(
        _repository, json_schema_input_type=str | Repository)]] | None = None
    keys: list[Annotated[PinnedKey | str, Field(union_mode="left_to_right")]] = []
    accounts: Accounts = Accounts()
    services: dict[Runlevel, Annotated[list[str], BeforeValidator(_no_removals)]] = Field(
        default={}, description="OpenRC services by runlevel, added to the variant's; '-name' "
                                "removes one the variant (or an extended profile) enables.")
    overlay: Overlay = Overlay()
    config: ImageConfig = ImageConfig()
    outputs: list[Output] = Field(default=[], min_length=1)
    sbom: bool = True
    source_date_epoch: Annotated[int, Field(ge=0, le=2**33 - 1)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _apply_variant(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        from composer.profile.variants import apply_preset

        return apply_preset(data)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("use lowercase letters, digits, '.', '_' and '-', starting with a "
                             "letter or digit")
        return value

    @field_validator("branch", mode="before")
    @classmethod
    def _branch_text(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError(f"YAML read {value!r} as a number: write the branch as a string "
                             f"with a 'v', e.g. v{value}")
        return value

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        if not _BRANCH.fullmatch(value):
            raise ValueError("expected 'vX.Y' (e.g. v3.20), 'edge' or 'latest-stable'")
        return value

    @field_validator("release")
    @classmethod
    def _release(cls, value: str | None) -> str | None:
        if value is not None and not _RELEASE.fullmatch(value):
            raise ValueError("expected a release version such as 3.20.3")
        return value

    @field_validator("arch", mode="before", json_schema_input_type=Arch | list[Arch])
    @classmethod
    def _arch_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            raise ValueError("expected an architecture name (e.g. x86_64) or a list of them")
        return value

    @field_validator("arch")
    @classmethod
    def _arch_unique(cls, value: list[Arch]) -> list[Arch]:
        if not value:
            raise ValueError("name at least one architecture")
        if len(set(value)) != len(value):
            raise ValueError("an architecture is listed twice")
        return value

    @field_validator("mirror", "image_mirror")
    @classmethod
    def _mirror(cls, value: str) -> str:
        if not is_url(value):
            raise ValueError("expected an http://, https:// or file:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _consistency(self) -> Profile:
        if self.base == Base.PACKAGES and not self.packages:
            raise ValueError("base: packages needs a non-empty 'packages' list")
        if self.branch != "edge" and self.repositories:
            for repo in self.repositories:
                if repo.url == "testing":
                    raise ValueError("the 'testing' repository exists only on edge")
        return self
