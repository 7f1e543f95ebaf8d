"""Keys, gzip-member framing, signatures and signed APKINDEX verification."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zlib
from pathlib import Path

import pytest

from composer.apk.keys import TrustedKeys
from composer.apk.signing import (
    GzipMemberReader,
    parse_signature_name,
    split_gzip_members,
    verify_apkindex,
)
from composer.errors import ArchiveError, VerificationError
from composer.profile.model import PinnedKey
from composer.tree import FileTree
from tests.helpers.apkrepo import (
    PackageSpec,
    build_index,
    build_package,
    cut_tar,
    format_index_text,
    gzip_member,
    sign_sha1,
    sign_sha256,
    signature_member,
    signing_key,
)

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "alpine-real"
KEY_X86_64 = "alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub"
KEY_AARCH64 = "alpine-devel@lists.alpinelinux.org-616ae350.rsa.pub"


def real(relative: str) -> Path:
    path = REAL / relative
    if not path.exists():
        pytest.skip(f"real Alpine fixture {path} is absent (needs ../shared next to the repo)")
    return path


def real_keys() -> TrustedKeys:
    folder = real("apk-keys")
    return TrustedKeys.from_files({p.name: p.read_bytes() for p in sorted(folder.iterdir())})


# --- keys ----------------------------------------------------------------------------


def test_real_keys_parse_with_expected_sizes() -> None:
    keys = real_keys()
    assert len(keys) == 17
    assert keys[KEY_X86_64].key_size == 4096
    assert keys["alpine-devel@lists.alpinelinux.org-4a6a0840.rsa.pub"].key_size == 2048
    assert keys.key(KEY_X86_64).sha256 == (
        "207e4696d3c05f7cb05966aee557307151f1f00217af4143c1bcaf33b8df733f")


def test_unparsable_key_is_named() -> None:
    with pytest.raises(VerificationError) as err:
        TrustedKeys.from_files({"broken.rsa.pub": b"-----BEGIN PUBLIC KEY-----\nnope\n"},
                               source="profile")
    assert str(err.value).startswith("profile: key broken.rsa.pub is not a PEM public key (")


def test_non_rsa_key_is_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pem = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(VerificationError) as err:
        TrustedKeys.from_files({"ed.pub": pem}, source="profile")
    assert str(err.value) == "profile: key ed.pub is a Ed25519PublicKey, not an RSA public key"


def test_key_name_with_slash_is_refused() -> None:
    key = signing_key()
    with pytest.raises(VerificationError) as err:
        TrustedKeys.from_files({"../x.rsa.pub": key.public_pem}, source="profile")
    assert str(err.value) == "profile: '../x.rsa.pub' is not a valid key file name"


def test_pinned_key_sha256_checked() -> None:
    key = signing_key()
    files = {key.name: key.public_pem}
    trusted = TrustedKeys.from_pinned([PinnedKey(file=key.name, sha256=key.public_sha256)], files)
    assert list(trusted) == [key.name]
    wrong = "0" * 64
    with pytest.raises(VerificationError) as err:
        TrustedKeys.from_pinned([PinnedKey(file=key.name, sha256=wrong)], files, source="profile keys")
    assert str(err.value) == (f"profile keys: key {key.name} has sha256 {key.public_sha256}, "
                              f"but {wrong} is pinned")
    with pytest.raises(VerificationError) as err:
        TrustedKeys.from_pinned([PinnedKey(file="other.rsa.pub", sha256=wrong)], files)
    assert str(err.value) == "profile keys: pinned key other.rsa.pub is missing"


def test_pinned_real_key_matches_sources_md() -> None:
    path = real(f"apk-keys/{KEY_AARCH64}")
    pin = PinnedKey(file=KEY_AARCH64,
                    sha256="d11f6b21c61b4274e182eb888883a8ba8acdbf820dcc7a6d82a7d9fc2fd2836d")
    keys = TrustedKeys.from_pinned([pin], {KEY_AARCH64: path.read_bytes()})
    assert list(keys) == [KEY_AARCH64]


def test_keys_from_tree_follow_symlinks_inside_tree() -> None:
    key, other = signing_key(), signing_key("other")
    with FileTree() as tree:
        tree.add_file(f"usr/share/apk/keys/{key.name}", key.public_pem)
        tree.add_file(f"usr/share/apk/keys/{other.name}", other.public_pem)
        tree.add_dir("etc/apk/keys")
        tree.add_symlink(f"etc/apk/keys/{key.name}", f"../../../usr/share/apk/keys/{key.name}")
        tree.add_symlink(f"etc/apk/keys/{other.name}", f"/usr/share/apk/keys/{other.name}")
        keys = TrustedKeys.from_tree(tree, "etc/apk/keys")
        assert sorted(keys) == sorted([key.name, other.name])
        assert keys.key(key.name).data == key.public_pem

        tree.add_symlink("etc/apk/keys/dangling.rsa.pub", "/usr/share/apk/keys/gone")
        with pytest.raises(VerificationError) as err:
            TrustedKeys.from_tree(tree)
        assert str(err.value) == (
            "rootfs: etc/apk/keys/dangling.rsa.pub: symlink points to a missing file")


def test_keys_from_tree_through_symlinked_folder() -> None:
    key = signing_key()
    with FileTree() as tree:
        tree.add_file(f"usr/share/apk/keys/x86_64/{key.name}", key.public_pem)
        tree.add_dir("etc/apk")
        tree.add_symlink("etc/apk/keys", "../../usr/share/apk/keys/x86_64")
        assert list(TrustedKeys.from_tree(tree)) == [key.name]


def test_keys_from_tree_missing_folder_is_empty() -> None:
    with FileTree() as tree:
        assert len(TrustedKeys.from_tree(tree)) == 0


def test_keys_from_real_minirootfs() -> None:
    from composer.archive import load_tar

    tarball = real("minirootfs/alpine-minirootfs-3.20.3-x86_64.tar.gz")
    with FileTree() as tree, tarball.open("rb") as fh:
        load_tar(fh, tree, source=tarball.name)
        keys = TrustedKeys.from_tree(tree, "etc/apk/keys", source=tarball.name)
        assert sorted(keys) == [
            f"alpine-devel@lists.alpinelinux.org-{k}.rsa.pub"
            for k in ("4a6a0840", "5243ef4b", "5261cecb", "6165ee59", "61666e3f")]
        shipped = TrustedKeys.from_tree(tree, "usr/share/apk/keys/aarch64")
        assert sorted(shipped) == [f"alpine-devel@lists.alpinelinux.org-{k}.rsa.pub"
                                   for k in ("58199dcc", "616ae350")]
        assert shipped.key(KEY_AARCH64).data == real(f"apk-keys/{KEY_AARCH64}").read_bytes()


# --- gzip members --------------------------------------------------------------------


def test_split_gzip_members_keeps_raw_bytes() -> None:
    parts = [gzip_member(b"one" * 100), gzip_member(b""), gzip_member(b"three")]
    assert split_gzip_members(b"".join(parts)) == parts


def test_split_real_package_members() -> None:
    data = real("apk-aarch64/alpine-baselayout-3.2.0-r23.apk").read_bytes()
    members = split_gzip_members(data)
    assert [len(m) for m in members] == [666, 1563, 8783]
    assert b"".join(members) == data
    assert hashlib.sha256(members[2]).hexdigest() in zlib.decompress(members[1], 31).decode()


def test_split_rejects_truncation_and_garbage() -> None:
    good = gzip_member(b"x" * 5000)
    with pytest.raises(ArchiveError) as err:
        split_gzip_members(good + good[:-3], source="f.apk")
    assert str(err.value) == "f.apk: #2 gzip member is truncated"
    with pytest.raises(ArchiveError) as err:
        split_gzip_members(good + b"garbage", source="f.apk")
    assert str(err.value).startswith("f.apk: #2 gzip member is corrupt (")


def test_streamed_member_is_bounded_and_exact() -> None:
    payload = bytes(range(256)) * 40000  # ~10 MB, inflated in steps
    member = gzip_member(payload)
    reader = GzipMemberReader(io.BytesIO(member + gzip_member(b"tail")), source="s")
    raw = hashlib.sha256()
    chunks: list[int] = []
    size = reader.stream_member(raw.update, lambda c: chunks.append(len(c)), what="data")
    assert size == len(member)
    assert raw.hexdigest() == hashlib.sha256(member).hexdigest()
    assert sum(chunks) == len(payload) and max(chunks) <= 4 * 1024 * 1024
    assert reader.read_member(what="tail", max_size=10).content == b"tail"
    assert reader.at_end()


def test_member_size_limit() -> None:
    with pytest.raises(ArchiveError) as err:
        GzipMemberReader(io.BytesIO(gzip_member(b"\0" * 5000)), source="s").read_member(
            what="control", max_size=4096)
    assert str(err.value) == "s: control gzip member inflates to more than 4096 bytes"


# --- signatures ----------------------------------------------------------------------


def test_signature_names() -> None:
    assert parse_signature_name(".SIGN.RSA.k.rsa.pub") == ("RSA", "k.rsa.pub")
    assert parse_signature_name(".SIGN.RSA256.k.rsa.pub") == ("RSA256", "k.rsa.pub")
    assert parse_signature_name(".SIGN.RSA512.k.rsa.pub") == ("RSA512", "k.rsa.pub")
    assert parse_signature_name(".SIGN.DSA.k.pub") == (None, "k.pub")
    assert parse_signature_name(".PKGINFO") is None


def test_sign_functions_match_openssl_scheme() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    key = signing_key()
    public = key.private_key.public_key()
    public.verify(sign_sha1(key.private_key, b"m"), b"m", padding.PKCS1v15(), hashes.SHA1())
    public.verify(sign_sha256(key.private_key, b"m"), b"m", padding.PKCS1v15(), hashes.SHA256())
    assert len(sign_sha1(key.private_key, b"m")) == 256


# --- real APKINDEX files -------------------------------------------------------------


@pytest.mark.parametrize(("relative", "signer", "description", "records"), [
    ("apkindex/APKINDEX-v3.16-main-x86_64-v3.16.3-13.tar.gz", KEY_X86_64,
     "v3.16.3-13-g4d933a1fa3", 4929),
    ("apkindex/APKINDEX-v3.17-main-aarch64-v3.17.3-216.tar.gz", KEY_AARCH64,
     "v3.17.3-216-g54a39ace82a", 5004),
    ("apkindex/APKINDEX-v3.19-main-x86_64-v3.19.1-643.tar.gz", KEY_X86_64,
     "v3.19.1-643-gec825d20535", 5443),
    ("iso-3.19.1-x86_64/apks/x86_64/APKINDEX.tar.gz", KEY_X86_64, "3.19.1", 100),
])
def test_real_apkindex_verifies(relative: str, signer: str, description: str,
                                records: int) -> None:
    data = real(relative).read_bytes()
    index = verify_apkindex(data, real_keys(), source=relative)
    assert index.signer == signer
    assert index.algorithm == "RSA"
    assert index.description == description
    assert index.text.count(b"\nP:") + index.text.startswith(b"P:") == records
    assert index.text.startswith(b"C:Q1") and index.text.endswith(b"\n\n")
    assert index.index_member_sha256 == hashlib.sha256(split_gzip_members(data)[1]).hexdigest()


def test_real_apkindex_with_only_the_other_key_is_unknown() -> None:
    data = real("apkindex/APKINDEX-v3.17-main-aarch64-v3.17.3-216.tar.gz").read_bytes()
    only_x86 = TrustedKeys.from_files(
        {KEY_X86_64: real(f"apk-keys/{KEY_X86_64}").read_bytes()})
    with pytest.raises(VerificationError) as err:
        verify_apkindex(data, only_x86, source="v3.17/main/aarch64")
    assert str(err.value) == f"v3.17/main/aarch64: signed by unknown key {KEY_AARCH64}"


def test_real_apkindex_key_swapped_under_right_name_is_bad() -> None:
    data = real("apkindex/APKINDEX-v3.16-main-x86_64-v3.16.3-13.tar.gz").read_bytes()
    impostor = TrustedKeys.from_files(
        {KEY_X86_64: real(f"apk-keys/{KEY_AARCH64}").read_bytes()})
    with pytest.raises(VerificationError) as err:
        verify_apkindex(data, impostor, source="v3.16/main/x86_64")
    assert str(err.value) == f"v3.16/main/x86_64: bad signature by {KEY_X86_64}"


def test_real_apkindex_tampered_is_bad() -> None:
    data = bytearray(real("iso-3.19.1-x86_64/apks/x86_64/APKINDEX.tar.gz").read_bytes())
    members = split_gzip_members(bytes(data))
    text = zlib.decompress(members[1], 31).replace(b"P:busybox\n", b"P:busyb0x\n")
    forged = members[0] + gzip_member(text)
    with pytest.raises(VerificationError) as err:
        verify_apkindex(forged, real_keys(), source="iso")
    assert str(err.value) == f"iso: bad signature by {KEY_X86_64}"


# --- synthetic APKINDEX files --------------------------------------------------------


def _index_text() -> bytes:
    key = signing_key()
    return format_index_text([build_package(PackageSpec("a", "1.0-r0"), key)])


def test_synthetic_index_round_trip_sha1_and_sha256() -> None:
    key = signing_key()
    text = _index_text()
    for algorithm in ("RSA", "RSA256", "RSA512"):
        data = build_index(text, key, description="test 1", algorithm=algorithm)
        index = verify_apkindex(data, key.trusted(), source="repo")
        assert (index.text, index.description, index.signer, index.algorithm) == (
            text, "test 1", key.name, algorithm)
    assert build_index(text, key) == build_index(text, key)


def test_synthetic_index_failures() -> None:
    key, other = signing_key(), signing_key("other")
    text = _index_text()
    cases = [
        (build_index(text, key, corrupt_signature=True), f"repo: bad signature by {key.name}"),
        (build_index(text, other), f"repo: signed by unknown key {other.name}"),
        (build_index(text, other, key_name=key.name), f"repo: bad signature by {key.name}"),
        (build_index(text, None), "repo: not signed"),
    ]
    for data, message in cases:
        with pytest.raises(VerificationError) as err:
            verify_apkindex(data, key.trusted(), source="repo")
        assert str(err.value) == message


def test_synthetic_index_structure_errors() -> None:
    key = signing_key()
    good = build_index(_index_text(), key)
    with pytest.raises(ArchiveError) as err:
        verify_apkindex(good[:-10], key.trusted(), source="repo")
    assert str(err.value) == "repo: index gzip member is truncated"
    with pytest.raises(ArchiveError) as err:
        verify_apkindex(good + b"\0" * 7, key.trusted(), source="repo")
    assert str(err.value) == "repo: 7 unexpected bytes after the index gzip member"
    with pytest.raises(ArchiveError) as err:
        verify_apkindex(b"", key.trusted(), source="repo")
    assert str(err.value) == "repo: empty index file"
    package = build_package(PackageSpec("a", "1.0-r0"), key)
    with pytest.raises(ArchiveError) as err:
        verify_apkindex(package.data, key.trusted(), source="repo")
    assert str(err.value) == (f"repo: {len(package.data_member)} unexpected bytes after the "
                              "index gzip member")
    control_only = package.signature_member + package.control_member
    with pytest.raises(ArchiveError) as err:
        verify_apkindex(control_only, key.trusted(), source="repo")
    assert str(err.value) == "repo: index tar holds '.PKGINFO'; this is a package, not an index"
    description_only = gzip_member(cut_tar([("DESCRIPTION", b"d", 0o644)], mtime=0,
                                           fmt=tarfile.GNU_FORMAT, owner_names=""))
    no_index = signature_member(key, description_only) + description_only
    with pytest.raises(ArchiveError) as err:
        verify_apkindex(no_index, key.trusted(), source="repo")
    assert str(err.value) == "repo: index tar has no APKINDEX file"
    empty = signature_member(key, gzip_member(b"")) + gzip_member(b"")
    with pytest.raises(ArchiveError) as err:
        verify_apkindex(empty, key.trusted(), source="repo")
    assert str(err.value) == "repo: index tar: not a readable tar archive (empty file)"
