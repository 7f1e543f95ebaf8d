"""Mistakes a new user makes, each refused or handled where README says, end to end."""

from __future__ import annotations

import gzip
import io
import os
import resource
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import run_cli, write_profile
from tests.helpers.gpg import SigningKey
from tests.helpers.httpserver import Server
from tests.helpers.mirror import MirrorInfo, build_mirror, make_minirootfs_tarball

PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n"
GROUP = b"root:x:0:root\nwheel:x:10:root\nnogroup:x:65533:\nnobody:x:65534:\n"


def tarball_with_accounts() -> bytes:
    """The test minirootfs plus /etc/passwd and /etc/group, as Alpine's has them."""
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    with tarfile.open(fileobj=io.BytesIO(make_minirootfs_tarball())) as tf:
        for info in tf:
            data = tf.extractfile(info).read() if info.isfile() else None  # type: ignore[union-attr]
            members.append((info, data))
    for name, data in (("./etc/passwd", PASSWD), ("./etc/group", GROUP)):
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, members[0][0].mtime
        members.append((info, data))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(raw.getvalue(), mtime=0)


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tf:
        return {m.name: m for m in tf}


def build(profile: Path, tmp_path: Path, *extra: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return run_cli("build", profile, "--output-dir", tmp_path / "out", "--cache-dir",
                   tmp_path / "cache", *extra)


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_services_run_after_the_overlay(tmp_path: Path, workdir: Path, mirror: MirrorInfo,
                                        signing_key: SigningKey) -> None:
    profile = write_profile(workdir, mirror_url=mirror.file_url, key=signing_key,
                            overlay={"files": [{"path": "/etc/init.d/web", "mode": "0755",
                                                "content": "#!/sbin/openrc-run\n"}]},
                            services={"default": ["web"]})
    result = build(profile, tmp_path)
    assert result.returncode == 0, result.stderr
    link = members(tmp_path / "out" / "test" / "test-3.20.3-x86_64.tar.gz")["./etc/runlevels/default/web"]
    assert link.issym() and link.linkname == "/etc/init.d/web"

    missing = write_profile(workdir, mirror_url=mirror.file_url, key=signing_key,
                            services={"default": ["nginx"]})
    refused = build(missing, tmp_path / "2")
    assert refused.returncode == 2
    assert last_line(refused) == (f"alpine-composer: error: {missing}: services: cannot enable "
                                  "service 'nginx': /etc/init.d/nginx does not exist")


def test_accounts_get_homes_and_profile_mistakes_exit_2(tmp_path: Path, workdir: Path,
                                                        signing_key: SigningKey) -> None:
    mirror = build_mirror(tmp_path / "mirror", key=signing_key, tarball=tarball_with_accounts())
    profile = write_profile(workdir, mirror_url=mirror.file_url, key=signing_key, accounts={
        "users": [{"name": "app", "uid": 1500}, {"name": "svc", "uid": 1600, "create_home": False,
                                                 "home": "/srv/svc"}]})
    result = build(profile, tmp_path)
    assert result.returncode == 0, result.stderr
    got = members(tmp_path / "out" / "test" / "test-3.20.3-x86_64.tar.gz")
    home = got["./home/app"]
    assert (home.isdir(), home.mode, home.uid, home.gid) == (True, 0o2755, 1500, 1500)
    assert "./srv/svc" not in got

    clash = write_profile(workdir, mirror_url=mirror.file_url, key=signing_key, accounts={
        "users": [{"name": "app", "uid": 1500}, {"name": "web", "uid": 1500}]})
    refused = build(clash, tmp_path / "2")
    assert refused.returncode == 2
    assert last_line(refused) == (f"alpine-composer: error: {clash}: accounts: uid '1500' in use "
                                  "by user app")
    unknown = write_profile(workdir, mirror_url=mirror.file_url, key=signing_key, accounts={
        "users": [{"name": "app", "group": "nosuch"}]})
    refused = build(unknown, tmp_path / "3")
    assert refused.returncode == 2
    assert last_line(refused) == f"alpine-composer: error: {unknown}: accounts: unknown group nosuch"

    shell = write_profile(workdir, mirror_url=mirror.file_url, key=signing_key, accounts={
        "users": [{"name": "app", "shell": "/bin/bash"}]})
    refused = build(shell, tmp_path / "4")
    assert refused.returncode == 2
    assert last_line(refused) == (f"alpine-composer: error: {shell}: accounts.users[0].shell: "
                                  "/bin/bash does not exist in the image (add the package that "
                                  "provides it)")

    user = write_profile(workdir, mirror_url=mirror.file_url, key=signing_key,
                         config={"user": "www:nogroup"},
                         outputs=[{"format": "oci"}])
    refused = build(user, tmp_path / "5")
    assert refused.returncode == 2
    assert last_line(refused) == (f"alpine-composer: error: {user}: config.user: user 'www' is not "
                                  "in the image's /etc/passwd (add it under accounts:, or give a "
                                  "numeric id)")
    for out in ("2", "3", "4", "5"):
        assert not (tmp_path / out / "out" / "test").exists()


@pytest.mark.parametrize(("fields", "message"), [
    ({"trust": {"key": "absent.asc"}}, "trust.key: absent.asc: no such file"),
    ({"keys": ["keys/none.rsa.pub"]}, "keys[0]: keys/none.rsa.pub: no such file"),
    ({"config": {"cmd": ["/bin/sh"]}}, "config: applies to oci, oci-archive and docker-archive "
                                       "outputs, and this profile has none"),
    ({"overlay": {"directories": ["/bin/sh"]}}, "overlay.directories: /bin/sh is a symlink in "
                                                "the image, not a folder"),
])
def test_profile_mistakes_before_anything_is_written(tmp_path: Path, workdir: Path,
                                                     http_mirror: Server, signing_key: SigningKey,
                                                     fields: dict[str, object], message: str) -> None:
    profile = write_profile(workdir, mirror_url=http_mirror.url, key=signing_key, **fields)
    result = build(profile, tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in last_line(result)
    assert not (tmp_path / "out" / "test").exists()
    if "directories" not in str(fields):  # found by the validation pass: nothing downloaded
        assert http_mirror.count("v3.20/releases/x86_64/latest-releases.yaml") == 0


def test_output_folder_inside_the_overlay_tree_is_refused(tmp_path: Path, workdir: Path,
                                                          mirror: MirrorInfo,
                                                          signing_key: SigningKey) -> None:
    (workdir / "root").mkdir()
    profile = write_profile(workdir, mirror_url=mirror.file_url, key=signing_key,
                            overlay={"tree": "root"})
    result = run_cli("build", profile, "--output-dir", workdir / "root" / "out")
    assert result.returncode == 2
    assert last_line(result) == (
        f"alpine-composer: error: {profile}: overlay.tree: root holds the output folder "
        f"{workdir / 'root' / 'out'}; the next build would copy its outputs into the image "
        "(choose another --output-dir)")


def test_unsigned_release_needs_no_release_key(tmp_path: Path, workdir: Path,
                                               signing_key: SigningKey) -> None:
    mirror = build_mirror(tmp_path / "mirror", key=signing_key, signed=False)
    profile = write_profile(workdir, mirror_url=mirror.file_url, key=signing_key,
                            trust={"fingerprint": signing_key.fingerprint,
                                   "key": "https://keys.invalid/release.asc",
                                   "allow_unsigned": True})
    result = build(profile, tmp_path, "--offline")
    assert result.returncode == 0, result.stderr
    assert "WITHOUT a signature" in result.stderr


def test_output_place_is_checked_before_downloading(tmp_path: Path, workdir: Path,
                                                   http_mirror: Server,
                                                   signing_key: SigningKey) -> None:
    profile = write_profile(workdir, mirror_url=http_mirror.url, key=signing_key)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli("build", profile, "--output-dir", blocker / "out", "--cache-dir",
                     tmp_path / "cache")
    assert result.returncode == 1
    assert last_line(result) == (f"alpine-composer: error: output folder {blocker / 'out'}: cannot "
                                 f"create {blocker / 'out'}: Not a directory")
    assert http_mirror.count("v3.20/releases/x86_64/latest-releases.yaml") == 0

    out = tmp_path / "out"
    out.mkdir()
    (out / "test").write_text("my notes")
    refused = run_cli("build", profile, "--output-dir", out, "--cache-dir", tmp_path / "cache")
    assert refused.returncode == 1
    assert last_line(refused) == (
        f"alpine-composer: error: {out / 'test'}: exists and is not an alpine-composer output "
        "folder (no manifest.json); refusing to replace it (move it, or choose another "
        "--output-dir)")
    assert (out / "test").read_text() == "my notes"
    assert http_mirror.count("v3.20/releases/x86_64/latest-releases.yaml") == 0


def test_rebuilds_replace_the_folder_and_leave_nothing_behind(
        tmp_path: Path, workdir: Path, mirror: MirrorInfo, signing_key: SigningKey) -> None:
    profile = write_profile(workdir, mirror_url=mirror.file_url, key=signing_key)
    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    out.mkdir()
    stale = out / f".test.partial-pid{int(dead.stdout)}-abc"
    stale.mkdir()
    (stale / "half.tar.gz").write_bytes(b"half")
    live = out / f".test.partial-pid{os.getpid()}-xyz"
    live.mkdir()
    for _ in range(2):
        result = run_cli("build", profile, "--output-dir", out, "--cache-dir", tmp_path / "cache")
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([live.name, "test"])


def test_a_full_output_disk_is_one_line(tmp_path: Path, workdir: Path, mirror: MirrorInfo,
                                        signing_key: SigningKey) -> None:
    files = []
    for i in range(3):  # each under the spill threshold: kept in memory, the output is large
        (workdir / f"big{i}.bin").write_bytes(os.urandom(90_000))
        files.append({"path": f"/opt/big{i}.bin", "source": f"big{i}.bin"})
    profile = write_profile(workdir, mirror_url=mirror.file_url, key=signing_key,
                            overlay={"files": files})
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    env["PYTHONPATH"] = os.fspath(Path(__file__).resolve().parent.parent)

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    result = subprocess.run([sys.executable, "-m", "composer", "build", profile, "--output-dir", out,
                             "--cache-dir", tmp_path / "cache"], env=env, capture_output=True,
                            text=True, timeout=120, preexec_fn=small_files)
    assert result.returncode == 1
    line = last_line(result)  # type: ignore[arg-type]
    assert line.startswith(f"alpine-composer: error: output folder {out}: cannot write ")
    assert line.endswith(": File too large")
    assert list(out.iterdir()) == []


def test_a_full_temporary_folder_is_one_line(tmp_path: Path) -> None:
    from composer.errors import ScratchError
    from composer.tree import BlobStore

    store = BlobStore(spill_threshold=0)

    previous = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        store.from_bytes(b"x" * 10)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, previous[1]))
        with pytest.raises(ScratchError, match="cannot write spill file: File too large"):
            store.from_bytes(b"y" * 5000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous)
        store.close()
