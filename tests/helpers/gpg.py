"""Real OpenPGP keys and signatures made with the ``gpg`` binary, for tests.

Each key lives in its own GNUPGHOME, so tests never touch the user's keyring.
Key generation is about half a second: make keys once per session.
gpg starts a gpg-agent per home; ``stop_agent(key)`` ends it (and removes a home that
had to be placed in /tmp), and an atexit hook does the same for any key left open.

    key = make_signing_key(tmp_path)
    asc = sign_detached(key, b"data")        # armored detached signature
    key.fingerprint, key.public_armored     # pin and public key bytes
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class SigningKey:
    """A gpg key: its home directory, primary fingerprint (upper hex) and public key."""

    homedir: Path
    fingerprint: str
    public_armored: bytes


def gpg_available() -> bool:
    return shutil.which("gpg") is not None


def require_gpg() -> None:
    """Skip the calling test when gpg is not installed."""
    if not gpg_available():
        pytest.skip("gpg is not installed (apt-get install gnupg)")


def _gpg(homedir: Path, *args: str, stdin: bytes | None = None) -> bytes:
    env = dict(os.environ, GNUPGHOME=os.fspath(homedir), LC_ALL="C")
    proc = subprocess.run(
        ["gpg", "--batch", "--no-tty", "--quiet", "--pinentry-mode", "loopback",
         "--passphrase", "", *args],
        input=stdin, capture_output=True, env=env, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"gpg {' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}"
        )
    return proc.stdout


def _new_home(tmpdir: Path) -> Path:
    # gpg-agent's socket path must stay short (108 bytes), so keep homes under /tmp.
    base = Path(tempfile.mkdtemp(prefix="gpg-", dir="/tmp" if len(os.fspath(tmpdir)) > 60 else tmpdir))
    base.chmod(0o700)
    return base


def make_signing_key(
    tmpdir: Path,
    *,
    name: str = "Composer Test Signer <signer@example.invalid>",
    algo: str = "rsa3072",
    expires: str = "never",
    faked_time: str | None = None,
) -> SigningKey:
    """Generate a sign-only key with the real gpg in a fresh GNUPGHOME.

    ``faked_time`` (e.g. ``20200101T000000``) with an ``expires`` date makes a key
    that has already expired.
    """
    homedir = _new_home(Path(tmpdir))
    atexit.register(_stop_agent_in, homedir)
    extra = ["--faked-system-time", faked_time] if faked_time else []
    _gpg(homedir, *extra, "--quick-gen-key", name, algo, "sign", expires)
    listing = _gpg(homedir, "--with-colons", "--list-keys").decode()
    fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
    )
    public = _gpg(homedir, "--armor", "--export", fingerprint)
    return SigningKey(homedir=homedir, fingerprint=fingerprint, public_armored=public)


def add_signing_subkey(key: SigningKey, algo: str = "ed25519") -> str:
    """Add a signing subkey; return its fingerprint. ``key.public_armored`` is stale after this."""
    _gpg(key.homedir, "--quick-add-key", key.fingerprint, algo, "sign", "never")
    listing = _gpg(key.homedir, "--with-colons", "--list-keys", key.fingerprint).decode()
    fingerprints = [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")]
    return fingerprints[-1]


def export_public(key: SigningKey, *, armor: bool = True) -> bytes:
    """The current public key (after subkey additions or revocation)."""
    return _gpg(key.homedir, *(["--armor"] if armor else []), "--export", key.fingerprint)


def revoke(key: SigningKey) -> bytes:
    """Revoke the key in its home using gpg's stored revocation certificate; return the
    armored public key carrying the revocation."""
    rev_path = key.homedir / "openpgp-revocs.d" / f"{key.fingerprint}.rev"
    text = rev_path.read_text()
    # gpg stores the certificate with a leading ':' so it cannot be imported by accident.
    text = text.replace(":-----BEGIN PGP PUBLIC KEY BLOCK-----", "-----BEGIN PGP PUBLIC KEY BLOCK-----")
    _gpg(key.homedir, "--import", stdin=text.encode())
    return export_public(key)


def sign_detached(
    key: SigningKey,
    data: bytes,
    *,
    digest: str = "SHA512",
    signer: str | None = None,
    armor: bool = True,
    faked_time: str | None = None,
) -> bytes:
    """A detached signature over ``data`` (armored unless ``armor=False``).

    ``signer`` selects a subkey by fingerprint; ``digest="SHA1"`` makes a weak one.
    """
    with tempfile.NamedTemporaryFile(dir=key.homedir, delete=False) as f:
        f.write(data)
        data_path = f.name
    try:
        args = ["--yes", "--digest-algo", digest, "--local-user", f"{signer or key.fingerprint}!"]
        if digest.upper() in ("SHA1", "MD5", "RIPEMD160"):
            args.append("--allow-weak-digest-algos")
        if faked_time:
            args += ["--faked-system-time", faked_time]
        if armor:
            args.append("--armor")
        return _gpg(key.homedir, *args, "--output", "-", "--detach-sign", data_path)
    finally:
        os.unlink(data_path)


def stop_agent(key: SigningKey) -> None:
    """End the gpg-agent that gpg started for this key's home; the key is unusable after."""
    _stop_agent_in(key.homedir)


def _stop_agent_in(homedir: Path) -> None:
    if not homedir.is_dir():
        return
    env = dict(os.environ, GNUPGHOME=os.fspath(homedir))
    if shutil.which("gpgconf"):
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True, check=False)
    if homedir.parent == Path("/tmp"):
        shutil.rmtree(homedir, ignore_errors=True)
