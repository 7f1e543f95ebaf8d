"""Build real-format signed APK packages and repositories from declarative specs.

Everything here produces the same bytes abuild's layout would carry: three gzip
members (signature, control cut at EOF, data with ``APK-TOOLS.checksum.SHA1``
PAX records and ``datahash``), and a two-member signed ``APKINDEX.tar.gz``.
Output is deterministic for a given key. Keys are generated at test time
(2048-bit RSA) and cached per process so suites stay fast.

Hostile variants come from ``build_package`` options (unsigned, corrupt or
foreign signature, wrong datahash, legacy no-datahash) and from
``build_repository(substitute=...)`` (index ``C:`` of one package, bytes of
another). Raw member names (``../x``, ``/abs``) are written verbatim.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import struct
import tarfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from composer.apk.keys import TrustedKeys
from composer.apk.signing import ALGORITHMS

DEFAULT_BUILDDATE = 1700000000
PAX_SHA1 = "APK-TOOLS.checksum.SHA1"


# --- signing (the product only verifies) -------------------------------------------------


def sign_sha1(private_key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    """A ``.SIGN.RSA.*`` signature: PKCS#1 v1.5 over SHA-1, as ``abuild-sign`` makes."""
    return private_key.sign(data, padding.PKCS1v15(), hashes.SHA1())


def sign_sha256(private_key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    """A ``.SIGN.RSA256.*`` signature: PKCS#1 v1.5 over SHA-256."""
    return private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def sign(private_key: rsa.RSAPrivateKey, data: bytes, algorithm: str) -> bytes:
    """Sign with the digest an algorithm token (``RSA``, ``RSA256``, ``RSA512``) names."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unsupported signature algorithm {algorithm!r}")
    return private_key.sign(data, padding.PKCS1v15(), ALGORITHMS[algorithm]())


# --- keys ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """A signing key and the file name its public half has in ``/etc/apk/keys``."""

    name: str
    private_key: rsa.RSAPrivateKey = field(repr=False)

    @property
    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def public_sha256(self) -> str:
        return hashlib.sha256(self.public_pem).hexdigest()

    def trusted(self) -> TrustedKeys:
        return TrustedKeys.from_files({self.name: self.public_pem})


@functools.cache
def signing_key(label: str = "main") -> SigningKey:
    """A 2048-bit RSA key named ``composer-test-<label>.rsa.pub``, made once per process."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey(name=f"composer-test-{label}.rsa.pub", private_key=key)



# --- package specs ---------------------------------------------------------------------


@dataclass(frozen=True)
class FileSpec:
    data: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    xattrs: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class SymlinkSpec:
    target: str
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class DirSpec:
    mode: int = 0o755
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class HardlinkSpec:
    """A hard link to another path of the same package (which must be a FileSpec/bytes)."""

    target: str


FileLike = bytes | FileSpec | SymlinkSpec | DirSpec | HardlinkSpec


@dataclass(frozen=True)
class PackageSpec:
    """What a package is; ``size`` None means: computed the way abuild does."""

    name: str
    version: str
    arch: str = "x86_64"
    description: str = ""
    url: str = ""
    license: str = "MIT"
    origin: str | None = None
    maintainer: str = ""
    commit: str = ""
    packager: str = "composer tests"
    builddate: int = DEFAULT_BUILDDATE
    depends: Sequence[str] = ()
    provides: Sequence[str] = ()
    install_if: Sequence[str] = ()
    replaces: Sequence[str] = ()
    triggers: Sequence[str] = ()
    provider_priority: int | None = None
    replaces_priority: int | None = None
    files: Mapping[str, FileLike] = field(default_factory=dict)
    scripts: Mapping[str, bytes] = field(default_factory=dict)
    size: int | None = None
    auto_dirs: bool = True

    @property
    def name_version(self) -> str:
        return f"{self.name}-{self.version}"

    @property
    def file_name(self) -> str:
        return f"{self.name}-{self.version}.apk"


@dataclass(frozen=True)
class BuiltPackage:
    spec: PackageSpec
    data: bytes
    signature_member: bytes
    control_member: bytes
    data_member: bytes
    pkginfo: bytes

    @property
    def checksum(self) -> str:
        """The index ``C:`` value."""
        return "Q1" + base64.b64encode(hashlib.sha1(self.control_member).digest()).decode()

    @property
    def installed_size(self) -> int:
        return _installed_size(self.spec)


# --- low-level writers -----------------------------------------------------------------


def gzip_member(data: bytes) -> bytes:
    """One gzip member as ``gzip -n -9`` writes it (MTIME 0, XFL 2, OS 3)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS, 9)
    body = deflate.compress(data) + deflate.flush()
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03"
    trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return header + body + trailer


def _tar_entry(info: tarfile.TarInfo, data: bytes = b"", *, fmt: int) -> bytes:
    info.size = len(data)
    block = info.tobuf(format=fmt, encoding="utf-8",  # type: ignore[arg-type]
                       errors="surrogateescape")
    padding = b"\0" * (-len(data) % 512)
    return block + data + padding


def cut_tar(entries: Sequence[tuple[str, bytes, int]], *, mtime: int, fmt: int,
            owner_names: str) -> bytes:
    """A tar of regular files with the end-of-archive blocks cut, as ``abuild-tar --cut``."""
    out = []
    for name, data, mode in entries:
        info = tarfile.TarInfo(name)
        info.mode = mode
        info.mtime = mtime
        info.uname = info.gname = owner_names
        out.append(_tar_entry(info, data, fmt=fmt))
    return b"".join(out)


def _installed_size(spec: PackageSpec) -> int:
    if spec.size is not None:
        return spec.size
    total = sum(len(_as_file(v).data) for v in spec.files.values()
                if isinstance(v, (bytes, FileSpec)))
    if total == 0 and (spec.files or spec.scripts):
        return 1
    return total


def _as_file(value: FileLike) -> FileSpec:
    if isinstance(value, bytes):
        return FileSpec(value)
    assert isinstance(value, FileSpec)
    return value


def _with_parent_dirs(spec: PackageSpec) -> dict[str, FileLike]:
    files: dict[str, FileLike] = dict(spec.files)
    if not spec.auto_dirs:
        return files
    for path in list(files):
        if path.startswith("/") or ".." in path.split("/"):
            continue
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            files.setdefault("/".join(parts[:i]), DirSpec())
    return files


def build_data_tar(spec: PackageSpec) -> bytes:
    """The data tar: sorted by path bytes, PAX, SHA-1 records for files and symlinks."""
    files = _with_parent_dirs(spec)
    order = sorted(files, key=lambda p: p.encode("utf-8", "surrogateescape"))
    link_groups: dict[str, list[str]] = {}
    for path in order:
        value = files[path]
        if isinstance(value, HardlinkSpec):
            link_groups.setdefault(value.target, [value.target]).append(path)
    first_of: dict[str, str] = {}
    for members in link_groups.values():
        members.sort(key=lambda p: p.encode("utf-8", "surrogateescape"))
        for member in members:
            first_of[member] = members[0]

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      encoding="utf-8", errors="surrogateescape") as archive:
        for path in order:
            value = files[path]
            group_head = first_of.get(path)
            if isinstance(value, HardlinkSpec) and group_head == path:
                value = files[value.target]
            info = tarfile.TarInfo(path)
            info.mtime = spec.builddate
            content = b""
            if group_head is not None and group_head != path:
                head_value = files[group_head]
                if isinstance(head_value, HardlinkSpec):
                    head_value = files[head_value.target]
                meta = _as_file(head_value)
                info.type = tarfile.LNKTYPE
                info.linkname = group_head
                info.mode, info.uid, info.gid = meta.mode, meta.uid, meta.gid
            elif isinstance(value, (bytes, FileSpec)):
                meta = _as_file(value)
                info.type = tarfile.REGTYPE
                info.mode, info.uid, info.gid = meta.mode, meta.uid, meta.gid
                content = meta.data
                info.pax_headers = {PAX_SHA1: hashlib.sha1(content).hexdigest()}
                for xname, xvalue in meta.xattrs:
                    info.pax_headers["SCHILY.xattr." + xname] = xvalue.decode(
                        "utf-8", "surrogateescape")
            elif isinstance(value, SymlinkSpec):
                info.type = tarfile.SYMTYPE
                info.linkname = value.target
                info.mode, info.uid, info.gid = 0o777, value.uid, value.gid
                info.pax_headers = {PAX_SHA1: hashlib.sha1(value.target.encode()).hexdigest()}
            elif isinstance(value, DirSpec):
                info.type = tarfile.DIRTYPE
                info.name = path.rstrip("/") + "/"
                info.mode, info.uid, info.gid = value.mode, value.uid, value.gid
            else:
                raise TypeError(f"{path}: unsupported file spec {value!r}")
            info.uname = "root" if info.uid == 0 else ""
            info.gname = "root" if info.gid == 0 else ""
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content) if content else None)
    return buf.getvalue()


def format_pkginfo(spec: PackageSpec, *, datahash: str | None) -> bytes:
    """``.PKGINFO`` in abuild's key order, ``datahash`` last."""
    lines = ["# Generated by composer tests",
             f"pkgname = {spec.name}", f"pkgver = {spec.version}",
             f"pkgdesc = {spec.description}", f"url = {spec.url}",
             f"builddate = {spec.builddate}", f"packager = {spec.packager}",
             f"size = {_installed_size(spec)}", f"arch = {spec.arch}",
             f"origin = {spec.origin or spec.name}"]
    if spec.commit:
        lines.append(f"commit = {spec.commit}")
    if spec.maintainer:
        lines.append(f"maintainer = {spec.maintainer}")
    if spec.replaces_priority is not None:
        lines.append(f"replaces_priority = {spec.replaces_priority}")
    if spec.provider_priority is not None:
        lines.append(f"provider_priority = {spec.provider_priority}")
    lines.append(f"license = {spec.license}")
    lines += [f"replaces = {r}" for r in spec.replaces]
    lines += [f"depend = {d}" for d in spec.depends]
    lines += [f"provides = {p}" for p in spec.provides]
    if spec.triggers:
        lines.append("triggers = " + " ".join(spec.triggers))
    if spec.install_if:
        lines.append("install_if = " + " ".join(spec.install_if))
    if datahash is not None:
        lines.append(f"datahash = {datahash}")
    return ("\n".join(lines) + "\n").encode()


def signature_member(key: SigningKey, message: bytes, *, algorithm: str = "RSA",
                     key_name: str | None = None, corrupt: bool = False,
                     mtime: int = DEFAULT_BUILDDATE) -> bytes:
    """The gzip member holding ``.SIGN.<algorithm>.<key_name>`` over ``message``."""
    signature = sign(key.private_key, message, algorithm)
    if corrupt:
        signature = bytes([signature[0] ^ 0x01]) + signature[1:]
    name = f".SIGN.{algorithm}.{key_name or key.name}"
    return gzip_member(cut_tar([(name, signature, 0o644)], mtime=mtime,
                               fmt=tarfile.GNU_FORMAT, owner_names=""))


# --- packages --------------------------------------------------------------------------


def build_package(spec: PackageSpec, key: SigningKey | None, *, algorithm: str = "RSA",
                  key_name: str | None = None, corrupt_signature: bool = False,
                  datahash: str | None = None, legacy: bool = False,
                  data_tar_filter: Callable[[bytes], bytes] | None = None) -> BuiltPackage:
    """Build a package; ``key=None`` leaves it unsigned, ``datahash`` overrides the real one,
    ``legacy`` omits datahash and signs control+data as pre-datahash abuild did,
    ``data_tar_filter`` rewrites the data tar before it is compressed and hashed."""
    data_tar = build_data_tar(spec)
    if data_tar_filter is not None:
        data_tar = data_tar_filter(data_tar)
    data_member = gzip_member(data_tar)
    real_hash = hashlib.sha256(data_member).hexdigest()
    pkginfo = format_pkginfo(spec, datahash=None if legacy else (datahash or real_hash))
    control_entries = [(".PKGINFO", pkginfo, 0o644)]
    control_entries += [(name, body, 0o755) for name, body in spec.scripts.items()]
    control_member = gzip_member(cut_tar(control_entries, mtime=spec.builddate,
                                         fmt=tarfile.USTAR_FORMAT, owner_names="root"))
    sig = b""
    if key is not None:
        message = control_member + data_member if legacy else control_member
        sig = signature_member(key, message, algorithm=algorithm, key_name=key_name,
                               corrupt=corrupt_signature, mtime=spec.builddate)
    return BuiltPackage(spec=spec, data=sig + control_member + data_member,
                        signature_member=sig, control_member=control_member,
                        data_member=data_member, pkginfo=pkginfo)


def build_apk(spec: PackageSpec, key: SigningKey | None, **options: object) -> bytes:
    """The ``.apk`` bytes of ``spec`` (see :func:`build_package` for options)."""
    return build_package(spec, key, **options).data  # type: ignore[arg-type]


# --- index and repository --------------------------------------------------------------


def format_index_record(built: BuiltPackage, *, file_size: int | None = None) -> str:
    """One APKINDEX record in apk-tools' field order ``C P V A S I T U L o m t c k D p i``."""
    spec = built.spec
    fields = [("C", built.checksum), ("P", spec.name), ("V", spec.version), ("A", spec.arch),
              ("S", str(len(built.data) if file_size is None else file_size)),
              ("I", str(built.installed_size)), ("T", spec.description), ("U", spec.url),
              ("L", spec.license), ("o", spec.origin or spec.name), ("m", spec.maintainer),
              ("t", str(spec.builddate) if spec.builddate else ""), ("c", spec.commit),
              ("k", str(spec.provider_priority) if spec.provider_priority else ""),
              ("D", " ".join(spec.depends)), ("p", " ".join(spec.provides)),
              ("i", " ".join(spec.install_if))]
    return "".join(f"{letter}:{value}\n" for letter, value in fields if value)


def format_index_text(packages: Sequence[BuiltPackage]) -> bytes:
    return "".join(format_index_record(p) + "\n" for p in packages).encode()


def build_index(text: bytes, key: SigningKey | None, *, description: str = "composer-test",
                algorithm: str = "RSA", key_name: str | None = None,
                corrupt_signature: bool = False) -> bytes:
    """A signed ``APKINDEX.tar.gz`` (``key=None``: unsigned) around an APKINDEX text."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name, data in (("DESCRIPTION", description.encode()), ("APKINDEX", text)):
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    index_member = gzip_member(buf.getvalue())
    if key is None:
        return index_member
    return signature_member(key, index_member, algorithm=algorithm, key_name=key_name,
                            corrupt=corrupt_signature, mtime=0) + index_member


def build_repository(directory: Path, specs: Sequence[PackageSpec], key: SigningKey, *,
                     arch: str = "x86_64", description: str = "composer-test",
                     substitute: Mapping[str, bytes] | None = None,
                     index_key: SigningKey | None = None) -> Path:
    """Write ``<directory>/<arch>/<name>-<version>.apk`` and a signed ``APKINDEX.tar.gz``.

    Returns ``directory``: the repository base a ``/etc/apk/repositories`` line names.
    ``substitute`` maps ``name-version`` to bytes written instead of the real package
    (the index keeps the real ``C:``/``S:``), to build hostile mirrors. ``index_key``
    signs the index with another key.
    """
    arch_dir = directory / arch
    arch_dir.mkdir(parents=True, exist_ok=True)
    built = [build_package(spec, key) for spec in specs]
    for pkg in built:
        body = (substitute or {}).get(pkg.spec.name_version, pkg.data)
        (arch_dir / pkg.spec.file_name).write_bytes(body)
    index = build_index(format_index_text(built), index_key or key, description=description)
    (arch_dir / "APKINDEX.tar.gz").write_bytes(index)
    return directory
