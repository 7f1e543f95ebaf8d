"""The command line's contract as README states it: flags on either side of the subcommand,
--json on failure, --mirror as a folder, verify's usage errors, SIGTERM, stalls and retries."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli, write_profile
from tests.helpers.gpg import SigningKey
from tests.helpers.mirror import MirrorInfo


def test_global_flags_before_the_subcommand(tmp_path: Path, workdir: Path, mirror: MirrorInfo,
                                            signing_key: SigningKey) -> None:
    profile = write_profile(workdir, mirror_url=mirror.file_url, key=signing_key)
    out = tmp_path / "out"
    result = run_cli("--debug", "--output-dir", out, "--cache-dir", tmp_path / "cache", "build",
                     profile, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["output_dir"] == str(out / "test")
    assert (out / "test" / "test-3.20.3-x86_64.tar.gz").is_file()
    # After the subcommand the same flags still work, and a later value wins over none.
    again = run_cli("build", profile, "--output-dir", out, "--cache-dir", tmp_path / "cache")
    assert again.returncode == 0, again.stderr


def test_json_failure_is_reported_on_stdout(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = run_cli("--json", "build", missing, "--output-dir", tmp_path / "out")
    assert result.returncode == 2
    assert json.loads(result.stdout) == {"ok": False, "exit": 2,
                                         "error": f"{missing}: no such profile file"}
    assert result.stderr == f"alpine-composer: error: {missing}: no such profile file\n"


def test_mirror_flag_accepts_a_folder_and_names_itself_when_wrong(
        tmp_path: Path, workdir: Path, mirror: MirrorInfo, signing_key: SigningKey) -> None:
    profile = write_profile(workdir, mirror_url="https://mirror.invalid/alpine", key=signing_key)
    folder_run = run_cli("build", profile, "--mirror", mirror.root, "--output-dir",
                         tmp_path / "a", "--cache-dir", tmp_path / "cache")
    assert folder_run.returncode == 0, folder_run.stderr
    url_run = run_cli("build", profile, "--mirror", mirror.file_url, "--output-dir",
                      tmp_path / "b", "--cache-dir", tmp_path / "cache")
    assert url_run.returncode == 0, url_run.stderr
    name = "test/test-3.20.3-x86_64.tar.gz"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()

    absent = run_cli("build", profile, "--mirror", tmp_path / "absent", "--output-dir", tmp_path / "c")
    assert absent.returncode == 2
    assert absent.stderr == (f"alpine-composer: error: --mirror {tmp_path / 'absent'}: no such "
                             "folder (give a URL or a local mirror folder)\n")
    ftp = run_cli("build", profile, "--mirror", "ftp://example.org/alpine")
    assert ftp.returncode == 2
    assert ftp.stderr.startswith("alpine-composer: error: --mirror ftp://example.org/alpine: ")
    assert not (tmp_path / "c").exists()


def test_verify_names_bad_arguments_as_usage_errors(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "file.txt").write_text("x")
    folder = run_cli("verify", plain)
    assert folder.returncode == 2
    assert folder.stderr == (f"alpine-composer: error: {plain}: not an alpine-composer output (no "
                             f"SHA256SUMS or manifest.json in {plain})\n")
    bad_profile = tmp_path / "bad.yaml"
    bad_profile.write_text("name: [\n")
    profile_run = run_cli("verify", bad_profile)
    assert profile_run.returncode == 2
    assert profile_run.stderr.count("\n") == 1 and "Traceback" not in profile_run.stderr


def test_verify_takes_a_profile_and_make_verify_stops_on_a_bad_one(
        tmp_path: Path, workdir: Path, mirror: MirrorInfo, signing_key: SigningKey) -> None:
    profile = write_profile(workdir, mirror_url=mirror.file_url, key=signing_key)
    out = tmp_path / "out"
    assert run_cli("build", profile, "--output-dir", out, "--cache-dir",
                   tmp_path / "cache").returncode == 0
    ok = run_cli("verify", profile, "--output-dir", out)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"OK  {out / 'test' / 'test-3.20.3-x86_64.tar.gz'}\n"

    if not (REPO / ".venv" / "bin" / "alpine-composer").exists() or not shutil.which("make"):
        pytest.skip("make verify needs `make install` (the .venv) and make")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nvariant: nonsense\n")
    made = subprocess.run(["make", "-s", "--no-print-directory", "verify", f"PROFILE={bad}",
                           f"OUTPUT_DIR={out}"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert made.returncode != 0
    assert "Traceback" not in made.stderr
    assert f"alpine-composer: error: {bad}: variant" in made.stderr
    assert "verify out/" not in made.stdout + made.stderr


def test_edited_sha256sums_names_the_two_records(tmp_path: Path, workdir: Path,
                                                 mirror: MirrorInfo, signing_key: SigningKey) -> None:
    profile = write_profile(workdir, mirror_url=mirror.file_url, key=signing_key)
    out = tmp_path / "out"
    assert run_cli("build", profile, "--output-dir", out, "--cache-dir",
                   tmp_path / "cache").returncode == 0
    folder = out / "test"
    artifact = folder / "test-3.20.3-x86_64.tar.gz"
    good = (folder / "SHA256SUMS").read_text().split()[0]
    forged = ("0" if good[0] != "0" else "1") + good[1:]
    (folder / "SHA256SUMS").write_text(f"{forged}  {artifact.name}\n")
    result = run_cli("verify", folder)
    assert result.returncode == 4
    assert result.stderr == (f"alpine-composer: error: {artifact}: SHA256SUMS records sha256 "
                             f"{forged} but manifest.json records {good}; the file matches "
                             "manifest.json\n")


def test_rebuild_lists_every_differing_member_with_octal_modes(
        tmp_path: Path, workdir: Path, mirror: MirrorInfo, signing_key: SigningKey) -> None:
    (workdir / "tree" / "opt").mkdir(parents=True)
    tool = workdir / "tree" / "opt" / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (workdir / "app.conf").write_text("a = 1\n")
    profile = write_profile(
        workdir, mirror_url=mirror.file_url, key=signing_key,
        overlay={"tree": "tree", "files": [{"path": "/etc/app.conf", "source": "app.conf",
                                            "mode": "0644"}]},
        outputs=[{"format": "tar", "compression": "gzip"}, {"format": "oci", "tag": "t"}],
        sbom=False)
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert run_cli("build", profile, "--output-dir", out, "--cache-dir", cache).returncode == 0
    tool.chmod(0o644)
    (workdir / "app.conf").write_text("a = 2\n")
    result = run_cli("verify", "--rebuild", profile, "--output-dir", out, "--cache-dir", cache)
    assert result.returncode == 4
    line = result.stderr.strip().splitlines()[-1]
    tar = out / "test" / "test-3.20.3-x86_64.tar.gz"
    assert f"{tar}: rebuild differs: /etc/app.conf: content sha256 " in line
    assert "; /opt/tool: mode 0o755 (published) != 0o644 (rebuild)" in line
    assert f"{out / 'test' / 'oci'}: rebuild differs: " in line
    assert "linux/amd64 layer 1!/opt/tool: mode 0o755 (published) != 0o644 (rebuild)" in line
    assert "linux/amd64 layer 1!/etc/app.conf: content sha256 " in line


# -- faults: a stalled mirror, SIGTERM, a damaged cache ---------------------------------------


@pytest.fixture
def stalled_server() -> Iterator[str]:
    """A server that accepts connections and then never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/alpine"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        listener.close()


def test_stalled_mirror_logs_each_retry_and_honours_timeout(
        tmp_path: Path, workdir: Path, stalled_server: str, signing_key: SigningKey) -> None:
    profile = write_profile(workdir, mirror_url=stalled_server, key=signing_key)
    started = time.monotonic()
    result = run_cli("build", profile, "--timeout", "0.5", "--retries", "2", "--retry-delay", "0.1",
                     "--output-dir", tmp_path / "out", "--cache-dir", tmp_path / "cache")
    assert result.returncode == 3
    retries = [line for line in result.stderr.splitlines() if "retrying in" in line]
    assert retries == [
        f"warning: latest-releases.yaml for v3.20/x86_64: {stalled_server}/v3.20/releases/x86_64/latest-releases.yaml: "
        f"timed out (attempt {n} of 3); retrying in {w} s" for n, w in ((1, "0.1"), (2, "0.2"))]
    assert result.stderr.splitlines()[-1].endswith("timed out after 3 attempts")
    assert time.monotonic() - started < 60
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_default_network_patience_stays_under_a_minute() -> None:
    from composer.cli import DEFAULT_RETRIES, DEFAULT_RETRY_DELAY, DEFAULT_TIMEOUT

    waits = sum(DEFAULT_RETRY_DELAY * 2 ** i for i in range(DEFAULT_RETRIES))
    assert (DEFAULT_RETRIES + 1) * DEFAULT_TIMEOUT + waits < 60


def test_sigterm_cleans_up_like_ctrl_c(tmp_path: Path, workdir: Path, stalled_server: str,
                                       signing_key: SigningKey) -> None:
    profile = write_profile(workdir, mirror_url=stalled_server, key=signing_key)
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    env["PYTHONPATH"] = os.fspath(REPO)
    proc = subprocess.Popen([sys.executable, "-m", "composer", "build", profile, "--timeout", "30",
                             "--output-dir", tmp_path / "out", "--cache-dir", cache],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not list((cache / "tmp").glob("*.part")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((cache / "tmp").glob("*.part")), "the build never started its download"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert stderr.splitlines()[-1] == "alpine-composer: terminated"
    assert list((cache / "tmp").iterdir()) == []


def test_leftovers_of_dead_builds_are_swept_and_live_ones_kept(
        tmp_path: Path, workdir: Path, mirror: MirrorInfo, signing_key: SigningKey) -> None:
    profile = write_profile(workdir, mirror_url=mirror.file_url, key=signing_key)
    cache = tmp_path / "cache"
    (cache / "tmp").mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    (cache / "tmp" / f"pid{dead_pid}-abc.part").write_bytes(b"half")
    live = cache / "tmp" / f"pid{os.getpid()}-xyz.part"
    live.write_bytes(b"mine")
    result = run_cli("build", profile, "--output-dir", tmp_path / "out", "--cache-dir", cache)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (cache / "tmp").iterdir()) == [live.name]


def _blob_for(cache: Path, data: bytes) -> Path:
    import hashlib

    return cache / "blobs" / "sha256" / hashlib.sha256(data).hexdigest()


def test_damaged_cache_blob_is_fetched_again_or_named_offline(
        tmp_path: Path, workdir: Path, mirror: MirrorInfo, signing_key: SigningKey) -> None:
    profile = write_profile(workdir, mirror_url=mirror.file_url, key=signing_key)
    cache = tmp_path / "cache"
    first = run_cli("build", profile, "--output-dir", tmp_path / "a", "--cache-dir", cache)
    assert first.returncode == 0, first.stderr
    blob = _blob_for(cache, mirror.tarball)
    blob.write_bytes(mirror.tarball[:100])  # truncated in place
    again = run_cli("build", profile, "--output-dir", tmp_path / "b", "--cache-dir", cache)
    assert again.returncode == 0, again.stderr
    assert f"the cache file {blob} is damaged" in again.stderr
    name = "test/test-3.20.3-x86_64.tar.gz"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert blob.read_bytes() == mirror.tarball

    blob.write_bytes(b"garbage")
    offline = run_cli("build", profile, "--offline", "--output-dir", tmp_path / "c",
                      "--cache-dir", cache)
    assert offline.returncode == 3
    assert f"the cache file {blob} is damaged" in offline.stderr
    assert "run once without --offline" in offline.stderr
    assert not blob.exists()


def test_cache_folder_that_cannot_be_made_is_one_line(tmp_path: Path, workdir: Path,
                                                      mirror: MirrorInfo,
                                                      signing_key: SigningKey) -> None:
    profile = write_profile(workdir, mirror_url=mirror.file_url, key=signing_key)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_cli("build", profile, "--output-dir", tmp_path / "out", "--cache-dir",
                     blocker / "cache")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"alpine-composer: error: cache folder {blocker / 'cache'}: cannot create: Not a directory")


def test_host_files_outside_the_profile_need_the_opt_in(tmp_path: Path, workdir: Path,
                                                        mirror: MirrorInfo,
                                                        signing_key: SigningKey) -> None:
    secret = tmp_path / "secret"
    secret.write_text("hunter2\n")
    profile = write_profile(workdir, mirror_url=mirror.file_url, key=signing_key,
                            overlay={"files": [{"path": "/etc/leak", "source": str(secret)}]})
    out = tmp_path / "out"
    refused = run_cli("build", profile, "--output-dir", out, "--cache-dir", tmp_path / "cache")
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1] == (
        f"alpine-composer: error: overlay.files /etc/leak: source: {secret} leads outside the "
        f"profile's folder (to {secret}); keep overlay sources beside the profile, or build with "
        "--allow-host-paths")
    assert not (out / "test").exists()
    allowed = run_cli("build", profile, "--allow-host-paths", "--output-dir", out, "--cache-dir",
                      tmp_path / "cache")
    assert allowed.returncode == 0, allowed.stderr
