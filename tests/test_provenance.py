"""The in-toto/SLSA provenance beside manifest.json, and OpenPGP signatures of SHA256SUMS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pysequoia
import pytest

from tests.conftest import run_cli
from tests.helpers.gpg import SigningKey, require_gpg
from tests.helpers.httpserver import serve_directory
from tests.helpers.mirror import MirrorInfo
from tests.stages.test_mirror import full_mirror  # noqa: F401 (a fixture)
from tests.test_lock import FAST, HELLO_APK, artifacts, live, locked_profile  # noqa: F401

CDN = "https://dl-cdn.alpinelinux.org/alpine"


def test_provenance_names_outputs_and_locked_inputs(tmp_path: Path, live: MirrorInfo,  # noqa: F811
                                                    signing_key: SigningKey) -> None:
    with serve_directory(live.root) as server:
        profile = locked_profile(tmp_path / "p", server, signing_key)
        built = run_cli("build", profile, "--output-dir", tmp_path / "http", "--cache-dir",
                        tmp_path / "c1", *FAST)
        assert built.returncode == 0, built.stderr
    again = run_cli("build", profile, "--mirror", live.root, "--output-dir", tmp_path / "file",
                    "--cache-dir", tmp_path / "c2", *FAST)
    assert again.returncode == 0, again.stderr
    folder = tmp_path / "http" / "pinned"
    text = (folder / "provenance.intoto.json").read_bytes()
    # The statement names no build mirror: built from HTTP or file://, it is the same.
    assert text == (tmp_path / "file" / "pinned" / "provenance.intoto.json").read_bytes()
    statement = json.loads(text)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    sums = dict(reversed(line.split("  ", 1)) for line in
                (folder / "SHA256SUMS").read_text().splitlines())
    assert {s["name"]: s["digest"]["sha256"] for s in statement["subject"]} == sums
    deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    by_kind: dict[str, list[dict[str, object]]] = {}
    for dep in deps:
        by_kind.setdefault(dep["annotations"]["kind"], []).append(dep)
    assert [d["uri"] for d in by_kind["minirootfs"]] == [f"{CDN}/{live.relpath(live.filename)}"]
    assert by_kind["minirootfs"][0]["digest"] == {"sha256": live.sha256}
    hello = next(d for d in by_kind["package"] if d["name"] == HELLO_APK)
    assert hello["uri"] == f"{CDN}/{HELLO_APK}"
    import hashlib

    assert hello["digest"]["sha256"] == hashlib.sha256(
        (live.root / HELLO_APK).read_bytes()).hexdigest()
    assert {d["name"] for d in by_kind["apkindex"]} == {"v3.20/main/x86_64/APKINDEX.tar.gz",
                                                        "v3.20/community/x86_64/APKINDEX.tar.gz"}
    assert [d["name"] for d in by_kind["overlay"]] == ["files/motd"]
    assert by_kind["release-key"][0]["annotations"]["fingerprint"] == signing_key.fingerprint
    params = statement["predicate"]["buildDefinition"]["externalParameters"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert params["profile"]["digest"]["sha256"] == manifest["profile"]["digest"].split(":")[1]
    assert params["source_date_epoch"] == manifest["source_date_epoch"]
    assert run_cli("verify", folder).returncode == 0

    statement["subject"][0]["digest"]["sha256"] = "0" * 64
    (folder / "provenance.intoto.json").write_text(json.dumps(statement))
    bad = run_cli("verify", folder)
    assert bad.returncode == 4
    assert f"subject '{statement['subject'][0]['name']}' has sha256 {'0' * 64}" in bad.stderr


@pytest.fixture(scope="module")
def protected_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A passphrase-protected secret key exported by gpg, and its public key."""
    require_gpg()
    home = Path(os.environ.get("TMPDIR", "/tmp")) / f"sign-gpg-{os.getpid()}"
    home.mkdir(mode=0o700)
    out = tmp_path_factory.mktemp("protected")
    base = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback",
            "--passphrase", "s3cret"]
    try:
        subprocess.run([*base, "--quick-gen-key", "Builder <build@example.org>", "ed25519",
                        "sign", "never"], check=True, capture_output=True)
        (out / "secret.asc").write_bytes(subprocess.run(
            [*base, "--armor", "--export-secret-keys"], check=True, capture_output=True).stdout)
        (out / "public.asc").write_bytes(subprocess.run(
            [*base, "--armor", "--export"], check=True, capture_output=True).stdout)
        yield out / "secret.asc", out / "public.asc"
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                       capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def test_build_sign_and_verify_signature(tmp_path: Path, live: MirrorInfo,  # noqa: F811
                                         signing_key: SigningKey,
                                         protected_key: tuple[Path, Path]) -> None:
    secret, public = protected_key
    profile = locked_profile(tmp_path / "p", type("S", (), {"url": live.file_url})(),  # type: ignore[arg-type]
                             signing_key, outputs=[{"format": "tar", "compression": "none"}])
    out = tmp_path / "out"
    common = ("--output-dir", out, "--cache-dir", tmp_path / "cache", *FAST)
    no_pass = run_cli("build", profile, "--sign", secret, *common)
    assert no_pass.returncode == 2
    assert "secret key material is encrypted; set ALPINE_COMPOSER_SIGNING_PASSPHRASE" in no_pass.stderr
    assert not out.exists()  # refused before anything was fetched or written
    wrong = run_cli("build", profile, "--sign", secret, *common,
                    env={"ALPINE_COMPOSER_SIGNING_PASSPHRASE": "nope"})
    assert wrong.returncode == 2 and "is the passphrase right?" in wrong.stderr
    signed = run_cli("build", profile, "--sign", secret, *common,
                     env={"ALPINE_COMPOSER_SIGNING_PASSPHRASE": "s3cret"})
    assert signed.returncode == 0, signed.stderr
    folder = out / "pinned"
    assert "s3cret" not in signed.stderr + signed.stdout
    assert (folder / "SHA256SUMS.asc").read_bytes().startswith(b"-----BEGIN PGP SIGNATURE-----")
    fingerprint = pysequoia.Cert.from_file(str(public)).fingerprint.upper()

    checked = run_cli("verify", folder, "--signature", public)
    assert checked.returncode == 0, checked.stderr
    assert f"signed by {fingerprint}  {folder / 'SHA256SUMS'}" in checked.stdout.splitlines()
    assert f"signed by {fingerprint}  {folder / 'provenance.intoto.json'}" in checked.stdout

    other = pysequoia.Tsk.generate("Other <o@example.org>")
    (tmp_path / "other.asc").write_text(str(other.extract_certificate()))
    foreign = run_cli("verify", folder, "--signature", tmp_path / "other.asc")
    assert foreign.returncode == 4
    assert f"{folder / 'SHA256SUMS.asc'}: not a valid signature of SHA256SUMS" in foreign.stderr

    signature = (folder / "SHA256SUMS.asc").read_text()
    (folder / "SHA256SUMS.asc").write_text(signature.replace("\n\n", "\n\nAAAA", 1))
    damaged = run_cli("verify", folder, "--signature", public)
    assert damaged.returncode == 4 and "SHA256SUMS.asc" in damaged.stderr
    (folder / "SHA256SUMS.asc").unlink()
    unsigned = run_cli("verify", folder, "--signature", public)
    assert unsigned.returncode == 4
    assert "SHA256SUMS.asc: missing (the build was not signed" in unsigned.stderr


def test_unprotected_key_signs_without_a_passphrase(tmp_path: Path, live: MirrorInfo,  # noqa: F811
                                                    signing_key: SigningKey) -> None:
    tsk = pysequoia.Tsk.generate("Plain <p@example.org>")
    (tmp_path / "secret.asc").write_text(str(tsk))
    (tmp_path / "public.asc").write_text(str(tsk.extract_certificate()))
    profile = locked_profile(tmp_path / "p", type("S", (), {"url": live.file_url})(),  # type: ignore[arg-type]
                             signing_key, outputs=[{"format": "tar", "compression": "none"}])
    signed = run_cli("build", profile, "--sign", tmp_path / "secret.asc", "--output-dir",
                     tmp_path / "out", "--cache-dir", tmp_path / "cache", *FAST)
    assert signed.returncode == 0, signed.stderr
    checked = run_cli("verify", tmp_path / "out" / "pinned", "--signature", tmp_path / "public.asc")
    assert checked.returncode == 0, checked.stderr
    public_only = run_cli("build", profile, "--sign", tmp_path / "public.asc", "--output-dir",
                          tmp_path / "out2", "--cache-dir", tmp_path / "cache", *FAST)
    assert public_only.returncode == 2 and "not an OpenPGP secret key" in public_only.stderr
