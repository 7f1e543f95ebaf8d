"""What a profile may write to let someone log in (issue 14 item 1): SHA-512 crypt hashes
only, SSH public key lines, the console opt-in; each mistake named in one line that never
repeats a value that may be a real password."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from composer.errors import ProfileError
from composer.profile import load_profile
from composer.profile.logins import check_password_hash
from composer.profile.model import Profile

HASH = ("$6$composer2026$ZrPSCGLtdY21pBLSI7KMTZpKvRCgaSqXVfCakU8KOQ7DC8xhZqOjaaAXjbOZAxYc"
        "3tQjcLT/jkvBa8yocAHOo1")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOwLvXYb2bXglDw3Q0xHK3vMQBpqfpVz05PCtL1dgRlf ops@t"
HINT = "make one with `openssl passwd -6` (or `mkpasswd -m sha-512`) and paste its output"
YESCRYPT = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7"


def load(tmp_path: Path, accounts: dict[str, Any]) -> Profile:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "p", "accounts": accounts}))
    return load_profile(path).profile


def refused(tmp_path: Path, accounts: dict[str, Any]) -> str:
    with pytest.raises(ProfileError) as info:
        load(tmp_path, accounts)
    text = str(info.value)
    assert "\n" not in text
    return text.removeprefix(f"{tmp_path / 'p.yaml'}: ")


def test_sha512_hashes_are_taken_for_users_and_root(tmp_path: Path) -> None:
    rounds = "$6$rounds=65536$abc$" + "x" * 86
    profile = load(tmp_path, {"root": {"password": rounds, "ssh_authorized_keys": [KEY]},
                              "users": [{"name": "ops", "password": HASH}]})
    assert profile.accounts.root.password == rounds
    assert profile.accounts.root.ssh_authorized_keys == [KEY]
    assert profile.accounts.users[0].password == HASH
    assert profile.accounts.root.console_login_without_password is False


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_what_openssl_passwd_6_prints_is_taken() -> None:
    made = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input="correct horse\n",
                          capture_output=True, text=True, check=True).stdout.strip()
    assert check_password_hash(made) == made


@pytest.mark.parametrize(("password", "message"), [
    ("hunter2", f"must be a crypt hash ($6$…), never the password itself; {HINT}"),
    (YESCRYPT, "a yescrypt ($y$) hash cannot be checked by Alpine's login, su or sshd (musl's "
               f"crypt() has no yescrypt); use a SHA-512 hash: {HINT}"),
    ("$5$abc$qsg6EHbUzHQzF1POlD7zUwBINSELQxypPaeDcZe6vH0",
     f"$5$ is a weaker crypt scheme than SHA-512; {HINT}"),
    ("$6$salt$tooshort", "not a well-formed SHA-512 crypt hash ($6$[rounds=N$]salt$ and 86 "
                         f"characters of [./0-9A-Za-z]); {HINT}"),
    ("", "leave password out to lock the account (an empty password is never written; see "
         "accounts.root.console_login_without_password)"),
])
def test_a_password_that_is_not_a_sha512_hash_is_refused_without_echoing_it(
        tmp_path: Path, password: str, message: str) -> None:
    for accounts, field in (({"users": [{"name": "ops", "password": password}]},
                             "accounts.users[0].password"),
                            ({"root": {"password": password}}, "accounts.root.password")):
        text = refused(tmp_path, accounts)
        assert text == f"{field}: {message}"
        assert "(got" not in text


@pytest.mark.parametrize(("line", "message"), [
    ("-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXk",
     "this is a private key; give the public key line (the .pub file)"),
    ("ssh-dss AAAAB3NzaC1kc3M= old", "not an SSH public key line (expected '<type> <base64> "
     "[comment]' with a type of: ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, "
     "ecdsa-sha2-nistp521, sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com)"),
    ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOwLvXYb2bXglDw3Q0xHK3vMQBpqfpVz05PCtL1dgRlf x",
     "the base64 blob is not a ssh-rsa key (it names another type, or is cut)"),
    (KEY + "\n" + KEY, "one key per entry, on one line, without control characters"),
])
def test_a_key_that_is_not_a_public_key_line_is_refused(tmp_path: Path, line: str,
                                                        message: str) -> None:
    text = refused(tmp_path, {"users": [{"name": "ops", "ssh_authorized_keys": [line]}]})
    assert text.startswith(f"accounts.users[0].ssh_authorized_keys[0]: {message}")


def test_key_options_are_kept(tmp_path: Path) -> None:
    line = f'from="10.0.2.2",no-pty {KEY}'
    profile = load(tmp_path, {"users": [{"name": "ops", "ssh_authorized_keys": [line]}]})
    assert profile.accounts.users[0].ssh_authorized_keys == [line]


def test_root_takes_a_password_or_the_console_opt_in_not_both(tmp_path: Path) -> None:
    assert refused(tmp_path, {"root": {"password": HASH,
                                       "console_login_without_password": True}}) == (
        "accounts.root: give a password or console_login_without_password: true, not both")
