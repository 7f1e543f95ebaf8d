"""A signed Alpine-style release mirror on disk, for fetch and end-to-end tests.

    key = make_signing_key(tmp)                      # tests.helpers.gpg
    info = build_mirror(tmp / "mirror", key=key)     # serve tmp/"mirror" or use info.file_url
    fetch_minirootfs(..., mirror=info.file_url, branch=info.branch, arch=info.arch, ...)

``make_minirootfs_tarball()`` gives small, deterministic bytes shaped like a real
minirootfs (``./`` member names, setuid busybox helper, applet symlinks, a
hardlink, a device node, a fifo, a non-root owned file).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.gpg import SigningKey, sign_detached

# 2024-09-06 11:34:00 UTC, the build time of the real 3.20.3 minirootfs.
MINIROOTFS_MTIME = 1725622440


@dataclass(frozen=True)
class MirrorInfo:
    """Where build_mirror put things. ``file_url`` is the mirror base (``file:///…``)."""

    root: Path
    file_url: str
    branch: str
    arch: str
    version: str
    filename: str
    release_dir: Path
    tarball_path: Path
    tarball: bytes
    sha256: str
    sha512: str
    size: int
    fingerprint: str | None

    def relpath(self, name: str) -> str:
        """URL path of a file in the release directory, relative to the mirror root."""
        return f"{self.branch}/releases/{self.arch}/{name}"


def _os_release(version: str) -> bytes:
    major_minor = ".".join(version.split(".")[:2])
    return (
        'NAME="Alpine Linux"\n'
        "ID=alpine\n"
        f"VERSION_ID={version}\n"
        f'PRETTY_NAME="Alpine Linux v{major_minor}"\n'
        'HOME_URL="https://alpinelinux.org/"\n'
        'BUG_REPORT_URL="https://gitlab.alpinelinux.org/alpine/aports/-/issues"\n'
    ).encode()


def make_minirootfs_tarball(version: str = "3.20.3", arch: str = "x86_64") -> bytes:
    """Deterministic gzip tar shaped like a real minirootfs (always the same bytes)."""
    major_minor = ".".join(version.split(".")[:2])
    busybox = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"fake busybox for tests\n"
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []

    def add(name: str, kind: bytes, mode: int, *, data: bytes | None = None, link: str = "",
            uid: int = 0, gid: int = 0, dev: tuple[int, int] = (0, 0)) -> None:
        info = tarfile.TarInfo("./" + name if name else ".")
        info.type = kind
        info.mode = mode
        info.uid, info.gid = uid, gid
        info.uname = info.gname = ""
        info.mtime = MINIROOTFS_MTIME
        info.linkname = link
        info.devmajor, info.devminor = dev
        info.size = len(data) if data is not None and kind == tarfile.REGTYPE else 0
        members.append((info, data if kind == tarfile.REGTYPE else None))

    add("", tarfile.DIRTYPE, 0o755)
    add("bin", tarfile.DIRTYPE, 0o755)
    add("bin/busybox", tarfile.REGTYPE, 0o755, data=busybox)
    add("bin/bbsuid", tarfile.REGTYPE, 0o4755, data=b"\x7fELF\x02\x01\x01 bbsuid\n")
    add("bin/sh", tarfile.SYMTYPE, 0o777, link="/bin/busybox")
    add("bin/ls", tarfile.SYMTYPE, 0o777, link="/bin/busybox")
    add("dev", tarfile.DIRTYPE, 0o755)
    add("dev/null", tarfile.CHRTYPE, 0o666, dev=(1, 3))
    add("dev/initctl", tarfile.FIFOTYPE, 0o600)
    add("etc", tarfile.DIRTYPE, 0o755)
    add("etc/alpine-release", tarfile.REGTYPE, 0o644, data=f"{version}\n".encode())
    add("etc/apk", tarfile.DIRTYPE, 0o755)
    add("etc/apk/arch", tarfile.REGTYPE, 0o644, data=f"{arch}\n".encode())
    add("etc/apk/repositories", tarfile.REGTYPE, 0o644, data=(
        f"https://dl-cdn.alpinelinux.org/alpine/v{major_minor}/main\n"
        f"https://dl-cdn.alpinelinux.org/alpine/v{major_minor}/community\n").encode())
    add("etc/apk/world", tarfile.REGTYPE, 0o644,
        data=b"alpine-baselayout\nalpine-keys\napk-tools\nbusybox\nlibc-utils\n")
    add("etc/os-release", tarfile.REGTYPE, 0o644, data=_os_release(version))
    add("etc/shadow", tarfile.REGTYPE, 0o640, data=b"root:!::0:::::\n", gid=42)
    add("home", tarfile.DIRTYPE, 0o755)
    add("home/user", tarfile.DIRTYPE, 0o700, uid=1000, gid=1000)
    add("home/user/.profile", tarfile.REGTYPE, 0o644, data=b"export PS1='$ '\n", uid=1000, gid=1000)
    add("sbin", tarfile.DIRTYPE, 0o755)
    add("sbin/init", tarfile.SYMTYPE, 0o777, link="/bin/busybox")
    add("tmp", tarfile.DIRTYPE, 0o1777)
    add("usr", tarfile.DIRTYPE, 0o755)
    add("usr/bin", tarfile.DIRTYPE, 0o755)
    add("usr/bin/getent", tarfile.REGTYPE, 0o755, data=b"#!/bin/sh\necho getent\n")
    add("usr/bin/getconf", tarfile.LNKTYPE, 0o755, link="./usr/bin/getent")

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    out = io.BytesIO()
    # mtime=0 and no file name keep the gzip header free of build-time noise.
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def latest_releases_yaml(
    *, branch: str, arch: str, version: str, filename: str, size: int, sha256: str, sha512: str
) -> bytes:
    """Real-shaped ``latest-releases.yaml``: Netboot stub first, minirootfs, then an ISO."""
    fake_iso = "alpine-standard-" + version + "-" + arch + ".iso"
    return f"""---
-
  title: "Netboot"
  desc: "Kernel, initramfs and modloop for
    netboot.
    "
  branch: {branch}
  arch: {arch}
-
  title: "Mini root filesystem"
  desc: "Minimal root filesystem.
    For use in containers
    and minimal chroots.
    "
  branch: {branch}
  arch: {arch}
  version: {version}
  flavor: alpine-minirootfs
  file: {filename}
  iso: {filename}
  date: 2024-09-06
  time: 11:34:00.000000000 +0000
  size: {size}
  sha256: {sha256}
  sha512: {sha512}
-
  title: "Standard"
  desc: "Alpine as it was intended.
    Just enough to get you started.
    Network connection is required.
    "
  branch: {branch}
  arch: {arch}
  version: {version}
  flavor: alpine-standard
  file: {fake_iso}
  iso: {fake_iso}
  date: 2024-09-06
  time: 11:40:12.000000000 +0000
  size: 219152384
  sha256: {"ab" * 32}
  sha512: {"cd" * 64}
""".encode()


def build_mirror(
    root: Path,
    *,
    key: SigningKey | None,
    branch: str = "v3.20",
    arch: str = "x86_64",
    version: str = "3.20.3",
    tarball: bytes | None = None,
    signed: bool = True,
) -> MirrorInfo:
    """Write ``<root>/<branch>/releases/<arch>/`` with yaml, tarball, ``.sha256`` and ``.asc``.

    ``signed=False`` (or ``key=None``) leaves the ``.asc`` out.
    """
    data = tarball if tarball is not None else make_minirootfs_tarball(version, arch)
    filename = f"alpine-minirootfs-{version}-{arch}.tar.gz"
    release_dir = Path(root) / branch / "releases" / arch
    release_dir.mkdir(parents=True, exist_ok=True)
    sha256 = hashlib.sha256(data).hexdigest()
    sha512 = hashlib.sha512(data).hexdigest()
    tarball_path = release_dir / filename
    tarball_path.write_bytes(data)
    (release_dir / f"{filename}.sha256").write_text(f"{sha256}  {filename}\n")
    (release_dir / f"{filename}.sha512").write_text(f"{sha512}  {filename}\n")
    asc = release_dir / f"{filename}.asc"
    if signed and key is not None:
        asc.write_bytes(sign_detached(key, data))
    elif asc.exists():
        asc.unlink()
    (release_dir / "latest-releases.yaml").write_bytes(latest_releases_yaml(
        branch=branch, arch=arch, version=version, filename=filename, size=len(data),
        sha256=sha256, sha512=sha512,
    ))
    return MirrorInfo(
        root=Path(root),
        file_url=Path(root).resolve().as_uri(),
        branch=branch,
        arch=arch,
        version=version,
        filename=filename,
        release_dir=release_dir,
        tarball_path=tarball_path,
        tarball=data,
        sha256=sha256,
        sha512=sha512,
        size=len(data),
        fingerprint=key.fingerprint if key is not None else None,
    )


def minirootfs_without_world(arch: str = "x86_64") -> bytes:
    """The test minirootfs with an empty ``/etc/apk/world`` and account files, for package
    builds: it has no apk database, so its own world could never be satisfied."""
    source = tarfile.open(fileobj=io.BytesIO(make_minirootfs_tarball(arch=arch)))
    buf = io.BytesIO()
    present = set()
    with source, tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as out:
        for member in source:
            present.add(member.name)
            data = source.extractfile(member).read() if member.isfile() else None
            if member.name == "./etc/apk/world":
                data = b""
                member.size = 0
            out.addfile(member, io.BytesIO(data) if data is not None else None)
        for name, text in (("./etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
                           ("./etc/group", b"root:x:0:root\nwheel:x:10:root\n"),
                           ("./etc/shadow", b"root:*::0:::::\n")):
            if name in present:
                continue
            info = tarfile.TarInfo(name)
            info.size = len(text)
            info.mode = 0o640 if name.endswith("shadow") else 0o644
            out.addfile(info, io.BytesIO(text))
    return gzip.compress(buf.getvalue(), mtime=0)
