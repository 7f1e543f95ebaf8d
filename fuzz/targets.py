"""What `make fuzz` feeds: one target per parser, seeded from the real Alpine artifacts.

A target has seeds (real bytes from ``../shared/fixtures/alpine-real``, cut to a
size that keeps a case fast), ``tokens`` the mutator likes to insert, an optional
``prepare`` that rebuilds the framing around mutated bytes (gzip, a fresh
signature by the fuzz key) so a mutation reaches the parser behind a signature
check, ``bombs`` (hand-made hostile inputs, run as they are as the first cases),
and ``run``, which may raise only :class:`ComposerError`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from composer.apk.datatar import load_package_data
from composer.apk.db import parse_installed, parse_scripts_tar, parse_triggers, parse_world
from composer.apk.depends import parse_dependencies
from composer.apk.index import parse_apkindex
from composer.apk.keys import TrustedKeys, parse_public_key
from composer.apk.package import parse_pkginfo, verify_apk
from composer.apk.signing import verify_apkindex
from composer.apk.version import Version, compare_versions, is_valid_version, version_matches
from composer.archive import load_tar
from composer.profile import load_profile
from composer.sources.releases import parse_checksum_file, parse_latest_releases
from composer.sources.trust import load_release_key, verify_detached
from composer.tree import BlobStore, FileTree
from fuzz.artifacts import artifact_targets
from fuzz.headers import http_target
from tests.helpers.apkrepo import sign
from tests.helpers.hostile import dearmor as _dearmor
from tests.helpers.hostile import deflate_zeros

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "fixtures" / "alpine-real"
NCOPA = "0482D84022F52DF1C4E7CD43293ACD0907D9495A"
FUZZ_KEY_NAME = "fuzz.rsa.pub"

TAR_TOKENS = [b"GNU.sparse.realsize=", b"GNU.sparse.map=", b" path=", b" size=99999999999\n",
              b" mtime=inf\n", b"ustar\x0000", b"ustar  \x00", b"S", b"x", b"g", b"L",
              b"\x80\xff\xff\xff", b"SCHILY.xattr.", b"APK-TOOLS.checksum.SHA1="]
TEXT_TOKENS = [b"\xff", b"\x00", b"\n\n", b":", b" = ", b"-r", b"_p", b"~", b">=", b"!", b"@",
               "¹²³".encode(), "٣".encode()]
YAML_TOKENS = [b"&a ", b"*a", b"!!int ", b"!!timestamp ", b"!!float ", b"2001-99-99", b"[[[[[",
               b"{{{{", b"<<: *a", b"? ", b"- ", b"\t", b"!!python/object ", b"%YAML 1.1\n"]


@dataclass
class Target:
    """One parser under fuzz."""

    name: str
    seeds: list[bytes]
    run: Callable[[bytes], object]
    tokens: list[bytes] = field(default_factory=list)
    prepare: Callable[[bytes], bytes] | None = None
    bombs: list[bytes] = field(default_factory=list)


def _members(data: bytes) -> list[bytes]:
    """The raw bytes of each concatenated gzip member."""
    out = []
    while data:
        decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
        decomp.decompress(data)
        used = len(data) - len(decomp.unused_data)
        out.append(data[:used])
        data = decomp.unused_data
    return out


def _inflate(member: bytes) -> bytes:
    return zlib.decompress(member, 16 + zlib.MAX_WBITS)


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1, mtime=0)


class FuzzKey:
    """An RSA key the re-signing targets sign with, trusted under ``fuzz.rsa.pub``."""

    def __init__(self) -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.trusted = TrustedKeys([parse_public_key(FUZZ_KEY_NAME, pem, source="fuzz")])

    def signature_member(self, message: bytes) -> bytes:
        signature = sign(self.private, message, "RSA")
        return _gzip(_cut_tar([(".SIGN.RSA." + FUZZ_KEY_NAME, signature)]))


def _tar(files: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _cut_tar(files: list[tuple[str, bytes]]) -> bytes:
    """A tar without its end-of-archive blocks, as APK signature and control members are."""
    return _tar(files)[:512 * sum(1 + (len(d) + 511) // 512 for _, d in files)]


def _files(pattern: str) -> list[Path]:
    return sorted(SHARED.glob(pattern))


def _real_keys() -> TrustedKeys:
    return TrustedKeys([parse_public_key(p.name, p.read_bytes(), source="fixtures")
                        for p in _files("apk-keys/*.rsa.pub")])


def _index_texts() -> list[bytes]:
    texts = []
    for path in _files("apkindex/*.tar.gz"):
        index_tar = _inflate(_members(path.read_bytes())[1])
        with tarfile.open(fileobj=io.BytesIO(index_tar)) as archive:
            member = archive.extractfile("APKINDEX")
            assert member is not None
            texts.append(member.read())
    return texts


def _record_windows(texts: list[bytes], count: int, size: int) -> list[bytes]:
    windows = []
    for text in texts:
        records = text.split(b"\n\n")
        step = max(1, len(records) // count)
        windows += [b"\n\n".join(records[i:i + size]) + b"\n\n"
                    for i in range(0, len(records), step)][:count]
    return windows


def _small_apks() -> list[bytes]:
    paths = [p for p in _files("iso-3.19.1-x86_64/apks/x86_64/*.apk") if p.stat().st_size < 40_000]
    return [p.read_bytes() for p in paths + _files("apk-aarch64/*.apk")]


def _minirootfs_file(name: str) -> bytes:
    path = SHARED / "minirootfs" / "alpine-minirootfs-3.20.3-x86_64.tar.gz"
    with tarfile.open(path) as archive:
        member = archive.extractfile(name)
        assert member is not None
        return member.read()


def _minirootfs_prefix(limit: int) -> bytes:
    """The real minirootfs tar cut after its first members (about ``limit`` bytes), ended properly."""
    raw = gzip.decompress((SHARED / "minirootfs" / "alpine-minirootfs-3.20.3-x86_64.tar.gz")
                          .read_bytes())
    pos = 0
    while pos < limit:
        size = int(raw[pos + 124:pos + 136].strip(b"\0 ") or b"0", 8)
        kind = raw[pos + 156:pos + 157]
        pos += 512 + ((size + 511) // 512 * 512 if kind in (b"0", b"\0") else 0)
    return raw[:pos] + bytes(1024)


def _pem_keys() -> list[bytes]:
    return [p.read_bytes() for p in _files("apk-keys/*.rsa.pub")]


def _unique_atoms(records: int) -> bytes:
    """Index text whose records list short unique dependency atoms: the most objects per
    byte an index can make."""
    return b"".join(b"P:p%d\nV:1\nD:" % i + b" ".join(b"%x_%d" % (i, j) for j in range(60))
                    + b"\n\n" for i in range(records))


def _yaml_bombs(flat: bytes) -> list[bytes]:
    """Deep nesting, an alias bomb, 1 MiB of flat list and a file past the 1 MiB cap."""
    alias = b"\n".join([b"- &a0 [x, x, x, x, x, x, x, x, x]"] + [
        b"- &a%d [%s]" % (i, b", ".join([b"*a%d" % (i - 1)] * 9)) for i in range(1, 9)]) + b"\n"
    return [b"- " * 5000 + b"x\n", b"a: " + b"[" * 100_000, alias, (flat * (1 << 20))[:1 << 20],
            flat * ((8 << 20) // len(flat)), (b"{" + b"a: b, " * 200_000)[:1 << 20],
            (b"[" + b"a, " * 400_000)[:1 << 20]]


def build_targets(workdir: Path) -> list[Target]:
    """Every target, its seeds read now (once, before the workers fork)."""
    real_keys = _real_keys()
    fuzz_key = FuzzKey()
    texts = _index_texts()
    windows = _record_windows(texts, 40, 12)
    apks = _small_apks()
    apk_parts = [_members(a) for a in apks]
    controls = [_inflate(p[-2]) for p in apk_parts]
    datas = [_inflate(p[-1]) for p in apk_parts if len(_inflate(p[-1])) < 200_000]
    pkginfos = []
    for control in controls:
        with tarfile.open(fileobj=io.BytesIO(control)) as archive:
            member = archive.extractfile(".PKGINFO")
            assert member is not None
            pkginfos.append(member.read())
    index_files = [p.read_bytes() for p in _files("apkindex/*.tar.gz")]
    signature_tars = [_inflate(_members(f)[0]) for f in index_files]
    small_index_member = _gzip(_tar([("DESCRIPTION", b"v3.19.1-643"),
                                     ("APKINDEX", windows[0])]))
    versions = sorted({m.group(1) for t in texts for m in re.finditer(rb"\nV:(.*)", t)})
    depends = [m.group(1) for t in texts[:1] for m in re.finditer(rb"\nD:(.*)", t)]
    world = _minirootfs_file("./etc/apk/world")
    installed = _minirootfs_file("./lib/apk/db/installed")
    ncopa = (SHARED / "gpg" / "ncopa.asc").read_bytes()
    signed_file = workdir / "signed-data"
    signed_file.write_bytes(b"fuzz")
    signature, signer, signer_fingerprint = _detached_signature_seed()
    release_key = load_release_key(signer, fingerprint=signer_fingerprint, source="signer")
    sums = (SHARED / "SHA256SUMS").read_bytes()
    profile_dir = workdir

    from tests.helpers.mirror import latest_releases_yaml
    releases = latest_releases_yaml(branch="v3.20", arch="x86_64", version="3.20.3",
                                    filename="alpine-minirootfs-3.20.3-x86_64.tar.gz",
                                    size=3490290, sha256="d4" * 32, sha512="ab" * 64)

    def signed(member: bytes) -> bytes:
        return fuzz_key.signature_member(member) + member

    def index_member(text: bytes) -> bytes:
        return _gzip(_tar([("DESCRIPTION", b"v3.19.1-643"), ("APKINDEX", text)]))

    million = b"".join(b"P:a%d\nV:1\n\n" % i for i in range(1_000_000))
    atoms = _unique_atoms(100_000)
    index_bombs = [signed(index_member(million)), signed(deflate_zeros(1 << 30)),
                   signed(index_member(atoms)),
                   signed(index_member(b"P:a\nV:1\nD:" + b"a " * 8_000_000 + b"\n\n"))]
    release_bombs = _yaml_bombs(b"- a\n") + [
        releases.replace(b"size: 3490290", b"size: " + b"9" * 4301),
        releases.replace(b"size: 3490290", "size: ¹²³".encode())]

    def run_signed_index(data: bytes) -> None:
        verified = verify_apkindex(data, real_keys, source="f")
        parse_apkindex(verified.text, source="f")

    def resign_index(index_tar: bytes) -> bytes:
        member = _gzip(index_tar)
        return fuzz_key.signature_member(member) + member

    def run_resigned_index(data: bytes) -> None:
        verified = verify_apkindex(data, fuzz_key.trusted, source="f")
        parse_apkindex(verified.text, source="f")

    def run_apk(data: bytes, keys: TrustedKeys = real_keys) -> None:
        pkg = verify_apk(data, keys, source="f")
        store = BlobStore()
        try:
            load_package_data(pkg, store)
        finally:
            store.close()

    def resign_control(control_tar: bytes) -> bytes:
        data_member = apk_parts[0][-1]
        control = _gzip(control_tar)
        return fuzz_key.signature_member(control) + control + data_member

    def resign_data(data_tar: bytes) -> bytes:
        data_member = _gzip(data_tar)
        datahash = hashlib.sha256(data_member).hexdigest().encode()
        info = re.sub(rb"datahash = [0-9a-f]+", b"datahash = " + datahash, pkginfos[-1])
        control = _gzip(_cut_tar([(".PKGINFO", info)]))
        return fuzz_key.signature_member(control) + control + data_member

    def run_tar_loader(data: bytes) -> None:
        with FileTree() as tree:
            load_tar(io.BytesIO(data), tree, source="f")

    def run_versions(data: bytes) -> None:
        a, _, b = data.decode("utf-8", "replace").partition("\n")
        compare_versions(a, b)
        hash(Version(a))
        is_valid_version(b)
        for op in ("<", "<=", "=", ">=", ">", "~", ">~", "<~"):
            version_matches(a, op, b)

    def run_depends(data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        parse_dependencies(text, source="f")
        parse_dependencies(text, source="f", strict=True)

    def run_checksum(data: bytes) -> None:
        parse_checksum_file(data, filename="alpine-minirootfs-3.20.3-x86_64.tar.gz", source="f")

    def run_release_key(data: bytes) -> None:
        load_release_key(data, fingerprint=NCOPA, source="f")

    def run_signature(data: bytes) -> None:
        verify_detached(signed_file, data, release_key, what="f")

    def run_rsa_key(data: bytes) -> None:
        parse_public_key("k.rsa.pub", data, source="f")

    def run_profile(data: bytes) -> None:
        path = profile_dir / f"profile-{os.getpid()}.yaml"
        path.write_bytes(data)
        load_profile(path)

    return [
        Target("apkindex-text", windows, lambda d: parse_apkindex(d, source="f"), TEXT_TOKENS,
               bombs=[million, atoms, b"P:a\nV:1\nT:" + b"x" * (64 << 20) + b"\n"]),
        Target("signed-index", index_files, run_signed_index, TAR_TOKENS),
        Target("index-signature-member",
               [s + b"\0" for s in signature_tars], run_signed_index, TAR_TOKENS,
               prepare=lambda sig: _gzip(sig[:-1]) + _members(index_files[0])[1]),
        Target("index-resigned", [_inflate(small_index_member)], run_resigned_index,
               TAR_TOKENS + TEXT_TOKENS, prepare=resign_index, bombs=index_bombs),
        Target("apk", apks, run_apk, TAR_TOKENS),
        Target("apk-control", controls, lambda d: run_apk(d, fuzz_key.trusted),
               TAR_TOKENS + TEXT_TOKENS, prepare=resign_control),
        Target("apk-data", datas, lambda d: run_apk(d, fuzz_key.trusted), TAR_TOKENS,
               prepare=resign_data),
        Target("pkginfo", pkginfos, lambda d: parse_pkginfo(d, source="f"), TEXT_TOKENS),
        Target("installed-db", [installed[:4000], installed], parse_installed, TEXT_TOKENS),
        Target("scripts-tar", [_minirootfs_file("./lib/apk/db/scripts.tar")], parse_scripts_tar,
               TAR_TOKENS),
        Target("triggers", [_minirootfs_file("./lib/apk/db/triggers")], parse_triggers,
               TEXT_TOKENS),
        Target("world", [world], parse_world, TEXT_TOKENS),
        Target("version", [a + b"\n" + b for a, b in zip(versions, versions[1:], strict=False)][:500],
               run_versions, TEXT_TOKENS),
        Target("dependency", depends[:500], run_depends, TEXT_TOKENS),
        Target("tar-loader", [_minirootfs_prefix(60_000)], run_tar_loader, TAR_TOKENS,
               prepare=_gzip),
        Target("tar-loader-gz", [_gzip(_minirootfs_prefix(60_000))], run_tar_loader, TAR_TOKENS),
        Target("latest-releases", [releases], lambda d: parse_latest_releases(d, source="f"),
               YAML_TOKENS + TEXT_TOKENS, bombs=release_bombs),
        Target("checksum-file", [sums], run_checksum, TEXT_TOKENS),
        Target("openpgp-key", [ncopa, _dearmor(ncopa)], run_release_key, TEXT_TOKENS),
        Target("openpgp-signature", [signature], run_signature, TEXT_TOKENS),
        Target("rsa-key", _pem_keys(), run_rsa_key, TEXT_TOKENS),
        Target("profile", [p.read_bytes() for p in sorted((ROOT / "profiles").glob("*.yaml"))],
               run_profile, YAML_TOKENS + TEXT_TOKENS,
               bombs=_yaml_bombs(b"- a\n") + _yaml_bombs(b"k: v\n")),
        *artifact_targets(workdir, _minirootfs_prefix(60_000), Target),
        http_target(workdir, Target),
    ]


def _detached_signature_seed() -> tuple[bytes, bytes, str]:
    """A real detached signature over ``fuzz`` made with gpg, the public key and its
    fingerprint (no Alpine ``.asc`` is among the fixtures)."""
    from tests.helpers.gpg import make_signing_key, sign_detached

    with tempfile.TemporaryDirectory() as home:
        key = make_signing_key(Path(home))
        return _dearmor(sign_detached(key, b"fuzz")), key.public_armored, key.fingerprint
