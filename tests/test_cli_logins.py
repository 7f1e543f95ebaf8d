"""Issue 14 item 1 and item 3: logging in to a built image, and nothing that identifies one
machine baked into it. Built through the CLI from the tests' signed mirror."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_shared, run_cli, write_profile
from tests.helpers.gpg import SigningKey
from tests.helpers.mirror import MirrorInfo, build_mirror

# `openssl passwd -6 -salt composertest alpine`
HASH = ("$6$composertest$1ZP0zzqHsX26v.IrfHoaygET9jMBuFLD67e37jJXHpg2efxelyTvkvDXHpNkB3i6g"
        "bpP1TAc2OZC/KwXFUJ.V0")
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBmH5zMZHyt6W8oe5pqYR0cK7mBy4JXW3VqvjIM+vmXP "
       "dev@example")
HINT = "make one with `openssl passwd -6` (or `mkpasswd -m sha-512`) and paste its output"


@pytest.fixture
def mirror(tmp_path: Path, signing_key: SigningKey) -> MirrorInfo:
    """A signed mirror of Alpine's real 3.20.3 minirootfs (its accounts files are real)."""
    real = require_shared() / "minirootfs" / "alpine-minirootfs-3.20.3-x86_64.tar.gz"
    return build_mirror(tmp_path / "mirror", key=signing_key, tarball=real.read_bytes())


def error_line(result: Any) -> str:
    """The one error line (the lines before it are progress)."""
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith("alpine-composer:")] == lines[-1:]
    return str(lines[-1])


def build(tmp_path: Path, mirror: MirrorInfo, key: SigningKey, **fields: Any) -> Any:
    profile = write_profile(tmp_path / "p", mirror_url=mirror.file_url, key=key, **fields)
    return run_cli("build", profile, "--output-dir", tmp_path / "out", "--cache-dir",
                   tmp_path / "cache")


def tree_of(tmp_path: Path) -> dict[str, tuple[int, int, int, int, bytes | None]]:
    """path → (type, mode, uid, gid, content) of the built tarball."""
    artifact = next((tmp_path / "out" / "test").glob("*.tar.gz"))
    with tarfile.open(artifact) as tf:
        return {m.name.removeprefix("./"): (ord(m.type), m.mode, m.uid, m.gid,
                                             tf.extractfile(m).read() if m.isfile() else None)  # type: ignore[union-attr]
                for m in tf}


def test_passwords_and_keys_for_root_and_a_user(tmp_path: Path, mirror: MirrorInfo,
                                                signing_key: SigningKey) -> None:
    result = build(tmp_path, mirror, signing_key, accounts={
        "root": {"password": HASH, "ssh_authorized_keys": [KEY]},
        "users": [{"name": "dev", "uid": 1000, "password": HASH, "ssh_authorized_keys": [KEY]}]})
    assert result.returncode == 0, result.stderr
    tree = tree_of(tmp_path)
    shadow = tree["etc/shadow"][4]
    assert shadow is not None
    lines = {line.split(":")[0]: line.split(":")[1] for line in shadow.decode().splitlines()}
    assert lines["root"] == HASH and lines["dev"] == HASH
    for home, uid in (("root", 0), ("home/dev", 1000)):
        ssh_dir = tree[f"{home}/.ssh"]
        keys = tree[f"{home}/.ssh/authorized_keys"]
        assert ssh_dir[:4] == (ord(tarfile.DIRTYPE), 0o700, uid, uid)
        assert keys[:4] == (ord(tarfile.REGTYPE), 0o600, uid, uid)
        assert keys[4] == KEY.encode() + b"\n"


def test_root_is_locked_by_default_and_the_console_opt_in(tmp_path: Path, mirror: MirrorInfo,
                                                          signing_key: SigningKey) -> None:
    assert build(tmp_path / "a", mirror, signing_key).returncode == 0
    shadow = tree_of(tmp_path / "a")["etc/shadow"][4]
    assert shadow is not None and shadow.decode().splitlines()[0].split(":")[1] in ("!", "*")
    result = build(tmp_path / "b", mirror, signing_key,
                   accounts={"root": {"console_login_without_password": True}})
    assert result.returncode == 0, result.stderr
    tree = tree_of(tmp_path / "b")
    shadow = tree["etc/shadow"][4]
    assert shadow is not None and shadow.decode().splitlines()[0].startswith("root::")
    securetty = tree["etc/securetty"][4]
    assert securetty is not None and b"ttyS0" in securetty and b"pts" not in securetty


@pytest.mark.parametrize(("password", "message"), [
    ("hunter2", f"must be a crypt hash ($6$…), never the password itself; {HINT}"),
    ("$y$j9T$rLjmXQESfuQ6.SU71jQSU1$IzSj3fJWZUsM3.q3P.rtsbD3J6Db7U2rJlVgxWaG098",
     "a yescrypt ($y$) hash cannot be checked by Alpine's login, su or sshd (musl's crypt() "
     f"has no yescrypt); use a SHA-512 hash: {HINT}"),
    ("$1$abc$def", f"$1$ is a weaker crypt scheme than SHA-512; {HINT}"),
])
def test_a_password_must_be_a_sha512_hash(tmp_path: Path, mirror: MirrorInfo,
                                          signing_key: SigningKey, password: str,
                                          message: str) -> None:
    result = build(tmp_path, mirror, signing_key, accounts={"root": {"password": password}})
    assert result.returncode == 2
    line = error_line(result)
    assert "accounts.root.password" in line and message in line, line
    assert not (tmp_path / "out" / "test").exists()


def test_a_private_key_is_refused(tmp_path: Path, mirror: MirrorInfo,
                                  signing_key: SigningKey) -> None:
    result = build(tmp_path, mirror, signing_key, accounts={"root": {"ssh_authorized_keys": [
        "-----BEGIN OPENSSH PRIVATE KEY-----"]}})
    assert result.returncode == 2
    assert "this is a private key; give the public key line (the .pub file)" in result.stderr


@pytest.mark.parametrize("path", ["/etc/shadow", "/etc/passwd", "/etc/group"])
def test_an_overlay_may_not_replace_the_account_files(tmp_path: Path, mirror: MirrorInfo,
                                                      signing_key: SigningKey, path: str) -> None:
    result = build(tmp_path, mirror, signing_key, overlay={"files": [
        {"path": path, "content": "root::0:0:root:/root:/bin/sh\n"}]})
    assert result.returncode == 2, result.stderr
    assert error_line(result) == (
        f"alpine-composer: error: overlay.files {path}: {path} would replace or remove {path}, "
        "the image's accounts (system ones and those of accounts:); declare users, groups, "
        "passwords and SSH keys under accounts: instead")
    assert not (tmp_path / "out" / "test").exists()


def test_an_overlay_tree_may_not_replace_them_either(tmp_path: Path, mirror: MirrorInfo,
                                                     signing_key: SigningKey) -> None:
    shadow = tmp_path / "p" / "tree" / "etc" / "shadow"
    shadow.parent.mkdir(parents=True)
    shadow.write_text("root::0:::::\n")
    result = build(tmp_path, mirror, signing_key, overlay={"tree": "tree"})
    assert result.returncode == 2, result.stderr
    assert "etc/shadow" in result.stderr, result.stderr


@pytest.mark.parametrize("path", ["/etc/ssh/ssh_host_ed25519_key", "/etc/machine-id",
                                  "/var/lib/seedrng/seed.credit"])
def test_no_machine_identity_in_an_image(tmp_path: Path, mirror: MirrorInfo,
                                         signing_key: SigningKey, path: str) -> None:
    result = build(tmp_path, mirror, signing_key, overlay={"files": [
        {"path": path, "content": "0123456789abcdef\n"}]})
    assert result.returncode == 2, result.stderr
    assert (f"{path} would be shared by every machine booted from this image; SSH host keys, "
            "/etc/machine-id and random seeds are made at first boot") in result.stderr
    assert not (tmp_path / "out" / "test").exists()
