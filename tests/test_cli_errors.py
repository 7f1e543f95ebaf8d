"""Every bad input: one clear line, the documented exit code, nothing in out/ or the cache."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli, write_profile
from tests.helpers.gpg import SigningKey, make_signing_key, sign_detached
from tests.helpers.httpserver import Server, serve_directory
from tests.helpers.mirror import MirrorInfo, build_mirror

FAST = ("--retries", "2", "--retry-delay", "0.01")


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("alpine-composer: error: ")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0].removeprefix("alpine-composer: error: ")


def assert_nothing_written(out: Path, cache: Path, *bad: bytes) -> None:
    assert not out.exists() or list(out.iterdir()) == [], list(out.iterdir())
    leftovers = [p for p in (cache / "tmp").rglob("*") if p.is_file()] if (cache / "tmp").exists() else []
    assert leftovers == []
    for data in bad:
        digest = hashlib.sha256(data).hexdigest()
        assert not list(cache.rglob(digest)), f"unverified bytes {digest} entered the cache"


def build(profile: Path, tmp_path: Path, *extra: str) -> tuple[int, str, Path, Path]:
    out, cache = tmp_path / "out", tmp_path / "cache"
    result = run_cli("build", profile, "--output-dir", out, "--cache-dir", cache, *FAST, *extra)
    return result.returncode, result.stderr, out, cache


def tarball_path(server: Server, mirror: MirrorInfo) -> str:
    return f"v3.20/releases/x86_64/{mirror.filename}"


def test_wrong_sha256(tmp_path: Path, mirror: MirrorInfo, http_mirror: Server,
                      signing_key: SigningKey) -> None:
    other = bytearray(mirror.tarball)
    other[len(other) // 2] ^= 0xFF  # same size, different bytes
    other = bytes(other)
    mirror.tarball_path.write_bytes(other)
    profile = write_profile(tmp_path / "p", mirror_url=http_mirror.url, key=signing_key)
    code, err, out, cache = build(profile, tmp_path)
    assert code == 4
    line = error_line(err)
    assert line.startswith("minirootfs ") or mirror.filename in line
    assert f"sha256 mismatch: expected {mirror.sha256}, got {hashlib.sha256(other).hexdigest()}" in line
    assert_nothing_written(out, cache, other)


def test_bad_signature(tmp_path: Path, mirror: MirrorInfo, signing_key: SigningKey) -> None:
    (mirror.release_dir / f"{mirror.filename}.asc").write_bytes(
        sign_detached(signing_key, b"some other bytes"))
    profile = write_profile(tmp_path / "p", mirror_url=mirror.file_url, key=signing_key)
    code, err, out, cache = build(profile, tmp_path)
    assert code == 4
    line = error_line(err)
    assert mirror.filename in line and "signature" in line
    assert_nothing_written(out, cache, mirror.tarball)


def test_signature_by_another_key(tmp_path: Path, mirror: MirrorInfo, signing_key: SigningKey) -> None:
    stranger = make_signing_key(tmp_path / "stranger")
    (mirror.release_dir / f"{mirror.filename}.asc").write_bytes(
        sign_detached(stranger, mirror.tarball))
    profile = write_profile(tmp_path / "p", mirror_url=mirror.file_url, key=signing_key)
    code, err, out, cache = build(profile, tmp_path)
    assert code == 4
    line = error_line(err)
    assert mirror.filename in line
    assert "not by the pinned release key" in line
    assert_nothing_written(out, cache, mirror.tarball)


def test_key_with_the_wrong_fingerprint(tmp_path: Path, mirror: MirrorInfo,
                                        signing_key: SigningKey) -> None:
    profile = write_profile(tmp_path / "p", mirror_url=mirror.file_url, key=signing_key,
                            trust={"fingerprint": "0482D84022F52DF1C4E7CD43293ACD0907D9495A",
                                   "key": "release-key.asc"})
    code, err, out, cache = build(profile, tmp_path)
    assert code == 4
    line = error_line(err)
    assert "0482" in line.replace(" ", "") or "0482d840" in line.lower()
    assert signing_key.fingerprint[-8:].lower() in line.lower().replace(" ", "")
    assert_nothing_written(out, cache, mirror.tarball)


def test_missing_asc_is_refused_unless_allowed(tmp_path: Path, signing_key: SigningKey) -> None:
    mirror = build_mirror(tmp_path / "mirror", key=signing_key, signed=False)
    profile = write_profile(tmp_path / "p", mirror_url=mirror.file_url, key=signing_key)
    code, err, out, cache = build(profile, tmp_path)
    assert code == 4
    line = error_line(err)
    assert ".asc" in line and "allow_unsigned" in line
    assert_nothing_written(out, cache, mirror.tarball)

    allowed = write_profile(tmp_path / "p2", mirror_url=mirror.file_url, key=signing_key,
                            trust={"fingerprint": signing_key.fingerprint,
                                   "key": "release-key.asc", "allow_unsigned": True})
    code, err, out, cache = build(allowed, tmp_path)
    assert code == 0, err
    assert "WARNING" in err and "signature" in err


def test_truncated_download_is_retried_then_fails(tmp_path: Path, mirror: MirrorInfo,
                                                   http_mirror: Server,
                                                   signing_key: SigningKey) -> None:
    path = tarball_path(http_mirror, mirror)
    http_mirror.faults.truncate(path, times=100)
    profile = write_profile(tmp_path / "p", mirror_url=http_mirror.url, key=signing_key)
    code, err, out, cache = build(profile, tmp_path)
    assert code == 3
    line = error_line(err)
    assert http_mirror.url_for(path) in line
    assert http_mirror.count(path) == 3
    assert_nothing_written(out, cache, mirror.tarball)


@pytest.mark.parametrize("status", [404, 500])
def test_http_errors(tmp_path: Path, mirror: MirrorInfo, http_mirror: Server,
                     signing_key: SigningKey, status: int) -> None:
    path = tarball_path(http_mirror, mirror)
    if status == 404:
        http_mirror.faults.missing(path)
    else:
        http_mirror.faults.fail(path, times=100, status=500)
    profile = write_profile(tmp_path / "p", mirror_url=http_mirror.url, key=signing_key)
    code, err, out, cache = build(profile, tmp_path)
    assert code == 3
    line = error_line(err)
    assert http_mirror.url_for(path) in line and f"HTTP {status}" in line
    assert http_mirror.count(path) == (1 if status == 404 else 3)  # 4xx: no retry
    assert_nothing_written(out, cache, mirror.tarball)


def test_connection_reset_is_retried_then_fails(tmp_path: Path, mirror: MirrorInfo,
                                                http_mirror: Server,
                                                signing_key: SigningKey) -> None:
    path = tarball_path(http_mirror, mirror)
    http_mirror.faults.reset(path, times=100, after=100)
    profile = write_profile(tmp_path / "p", mirror_url=http_mirror.url, key=signing_key)
    code, err, out, cache = build(profile, tmp_path)
    assert code == 3
    line = error_line(err)
    assert http_mirror.url_for(path) in line and "3 attempts" in line
    assert http_mirror.count(path) == 3
    assert_nothing_written(out, cache, mirror.tarball)


def test_transient_faults_recover_and_resume(tmp_path: Path, signing_key: SigningKey) -> None:
    import random

    info = _member("./blob")
    mirror = _hostile_mirror(tmp_path / "mirror", signing_key,
                             [(info, random.Random(5).randbytes(600_000))])
    with serve_directory(mirror.root) as server:
        path = f"v3.20/releases/x86_64/{mirror.filename}"
        server.faults.fail(path, times=1)
        server.faults.reset(path, times=1, after=400_000)
        profile = write_profile(tmp_path / "p", mirror_url=server.url, key=signing_key)
        code, err, out, _ = build(profile, tmp_path)
        assert code == 0, err
        requests = server.requests_for(path)
    assert len(requests) == 3
    assert requests[-1].headers["Range"].startswith("bytes=")
    assert int(requests[-1].headers["Range"][6:].rstrip("-")) > 0


def _hostile_mirror(root: Path, key: SigningKey, members: list[tuple[tarfile.TarInfo, bytes]]) -> MirrorInfo:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for info, data in members:
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return build_mirror(root, key=key, tarball=gzip.compress(buf.getvalue(), mtime=0))


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


@pytest.mark.parametrize(("members", "expected"), [
    ([(_member("./../../etc/cron.d/x"), b"x")], "member './../../etc/cron.d/x' contains '..'"),
    ([(_member("/etc/passwd"), b"x")], "member '/etc/passwd' is absolute"),
    ([(_member("./lib", tarfile.SYMTYPE, "/tmp"), b""), (_member("./lib/evil"), b"x")],
     "member 'lib/evil' passes through symlink 'lib' -> '/tmp'"),
    ([(_member("./a/link", tarfile.SYMTYPE, "../../../../etc/shadow"), b"")],
     "symlink 'a/link' -> '../../../../etc/shadow' escapes the root"),
])
def test_unsafe_tarballs(tmp_path: Path, signing_key: SigningKey,
                         members: list[tuple[tarfile.TarInfo, bytes]], expected: str) -> None:
    mirror = _hostile_mirror(tmp_path / "mirror", signing_key, members)
    profile = write_profile(tmp_path / "p", mirror_url=mirror.file_url, key=signing_key)
    code, err, out, cache = build(profile, tmp_path)
    assert code == 5
    assert error_line(err) == f"{mirror.filename}: {expected}"
    assert_nothing_written(out, cache)


def test_non_gzip_data(tmp_path: Path, signing_key: SigningKey) -> None:
    mirror = build_mirror(tmp_path / "mirror", key=signing_key, tarball=b"<html>not found</html>" * 50)
    profile = write_profile(tmp_path / "p", mirror_url=mirror.file_url, key=signing_key)
    code, err, out, cache = build(profile, tmp_path)
    assert code == 5
    assert error_line(err).startswith(f"{mirror.filename}: not a readable tar archive")
    assert_nothing_written(out, cache)


@pytest.mark.parametrize(("fields", "expected"), [
    ({"outptus": []}, "outptus: unknown key (did you mean 'outputs'?)"),
    ({"arch": 7}, "arch: expected an architecture name (e.g. x86_64) or a list of them"),
    ({"arch": ["x86_64", "sparc"]}, "arch[1]: Input should be 'x86_64', "),
    ({"overlay": {"files": [{"path": "/x", "content": "y", "mode": "rw-r--r--"}]}},
     "overlay.files[0].mode: 'rw-r--r--' is not an octal mode like '0644'"),
    ({"source_date_epoch": "soon"}, "source_date_epoch: Input should be a valid integer"),
    ({"mirror": "ftp://example.org"}, "mirror: expected an http://, https:// or file:// URL"),
    ({"outputs": [{"format": "qcow2"}]}, "outputs[0].format: unknown value 'qcow2' (expected one of 'tar', "),
])
def test_bad_profiles(tmp_path: Path, mirror: MirrorInfo, signing_key: SigningKey,
                      fields: dict[str, object], expected: str) -> None:
    profile = write_profile(tmp_path / "p", mirror_url=mirror.file_url, key=signing_key, **fields)
    code, err, out, cache = build(profile, tmp_path)
    assert code == 2
    assert error_line(err).startswith(f"{profile}: {expected}")
    assert_nothing_written(out, cache)
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))


def test_a_plain_text_password_is_refused_in_one_line(tmp_path: Path, mirror: MirrorInfo,
                                                      signing_key: SigningKey) -> None:
    profile = write_profile(tmp_path / "p", mirror_url=mirror.file_url, key=signing_key,
                            accounts={"users": [{"name": "ops", "password": "hunter2"}]})
    code, err, out, cache = build(profile, tmp_path)
    assert code == 2
    assert error_line(err) == (
        f"{profile}: accounts.users[0].password: must be a crypt hash ($6$…), never the password "
        "itself; make one with `openssl passwd -6` (or `mkpasswd -m sha-512`) and paste its "
        "output")
    assert "hunter2" not in err
    assert_nothing_written(out, cache)


@pytest.mark.parametrize(("output", "message"), [
    ({"kernel": "vrit"}, "kernel 'vrit' is not one of Alpine's flavors (did you mean 'virt'?)"),
    ({"kernel": "linux-virt"},
     "kernel 'linux-virt' is a package name; write the flavor, kernel: virt (the ISO boots "
     "/boot/vmlinuz-virt from package linux-virt)"),
    ({"cmdline": ""},
     "cmdline is empty; the kernel needs at least its console, e.g. 'console=ttyS0,115200'"),
    ({"cmdline": "console=ttyS0\nquiet"},
     "cmdline must be one line (the boot loaders read one line)"),
    ({"cmdline": "console=ttyS0 \x1b[2J"}, "cmdline holds the control character '\\x1b'"),
])
def test_iso_settings_are_refused_before_any_download(
        tmp_path: Path, http_mirror: Server, signing_key: SigningKey, output: dict[str, str],
        message: str) -> None:
    """The mirror is a real HTTP server that records every request: none may arrive."""
    profile = write_profile(tmp_path / "p", mirror_url=http_mirror.url, key=signing_key,
                            variant="virt", outputs=[{"format": "iso", **output}])
    code, err, out, cache = build(profile, tmp_path)
    assert code == 2
    assert error_line(err) == f"{profile}: outputs[0]: {message}"
    assert http_mirror.requests == []
    assert_nothing_written(out, cache)


def _iso_profile(tmp_path: Path, mirror: MirrorInfo, signing_key: SigningKey,
                 **fields: object) -> Path:
    """A virt ISO profile over the synthetic minirootfs and a repository with alpine-base, a
    stand-in openrc and boot packages that hold no boot files (enough to plan and compose)."""
    from tests.helpers.apkrepo import PackageSpec, build_repository
    from tests.helpers.apkrepo import signing_key as apk_key
    from tests.helpers.bootpkgs import base_packages
    from tests.helpers.mirror import minirootfs_without_world

    key = apk_key()
    build_mirror(mirror.root, key=signing_key, tarball=minirootfs_without_world())
    hollow = [PackageSpec(name=name, version="1.0-r0", files={f"usr/share/doc/{name}": b"-"})
              for name in ("linux-virt", "syslinux", "gummiboot")]
    build_repository(mirror.root / "v3.20" / "main", [*base_packages(), *hollow], key)
    (tmp_path / "p").mkdir(exist_ok=True)
    (tmp_path / "p" / key.name).write_bytes(key.public_pem)
    return write_profile(tmp_path / "p", mirror_url=mirror.file_url, key=signing_key,
                         variant="virt", outputs=[{"format": "iso"}], repositories=["main"],
                         keys=[key.name], **fields)


@pytest.mark.parametrize(("fields", "problem"), [
    ({"overlay": {"files": [{"path": "/etc/inittab", "content":
                             "::sysinit:/sbin/openrc sysinit\n"
                             "ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100\n"}]}},
     "/etc/inittab line 2: runs /sbin/getty, which is not an executable file in the image (add "
     "the package that provides it, or change /etc/inittab)"),
    ({"overlay": {"files": [{"path": "/etc/inittab", "content": "::sysinit:/sbin/openrc\n"}]},
      "packages": ["-alpine-base"], "services": {r: [f"-{s}" for s in names] for r, names in {
          "sysinit": ["devfs", "dmesg", "mdev", "hwdrivers"],
          "boot": ["hwclock", "modules", "sysctl", "hostname", "bootmisc", "syslog",
                   "networking"],
          "default": ["acpid", "crond"],
          "shutdown": ["mount-ro", "killprocs", "savecache"]}.items()}},
     "/etc/inittab line 1: runs /sbin/openrc, which is not an executable file in the image (add "
     "the package that provides it, or change /etc/inittab)"),
    ({"overlay": {"files": [{"path": "/etc/inittab", "content": "::sysinit:/bin/sh -c true\n"}]},
      "accounts": {"users": [{"name": "ops", "shell": "/bin/bash", "ssh_authorized_keys": [
          "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOwLvXYb2bXglDw3Q0xHK3vMQBpqfpVz05PCtL1dgRlf"]}]}},
     "/etc/passwd ops: login shell /bin/bash is not an executable file in the image (add the "
     "package that provides it, or choose another shell)"),
])
def test_an_image_that_would_not_boot_to_a_login_is_refused_before_writing(
        tmp_path: Path, mirror: MirrorInfo, signing_key: SigningKey, fields: dict[str, object],
        problem: str) -> None:
    profile = _iso_profile(tmp_path, mirror, signing_key, **fields)
    code, err, out, cache = build(profile, tmp_path)
    assert (code, error_line(err)) == (2, f"{profile}: the image would not boot to a login: "
                                          f"{problem}")
    assert not out.exists() or list(out.iterdir()) == []


def test_iso_boot_packages_without_the_boot_files_are_named(tmp_path: Path, mirror: MirrorInfo,
                                                            signing_key: SigningKey) -> None:
    """The ISO output installs linux-virt, syslinux and gummiboot; packages of those names
    that lack the files are named with each missing file, before anything is written."""
    iso = _iso_profile(tmp_path, mirror, signing_key, overlay={"files": [
        {"path": "/etc/inittab", "content": "::sysinit:/bin/sh -c true\n"}]})
    code, err, out, cache = build(iso, tmp_path)
    assert code == 6
    assert error_line(err) == (
        "ISO boot files missing from the image: /usr/lib/gummiboot/linuxx64.efi.stub (add "
        "package gummiboot); /boot/vmlinuz-virt (add package linux-virt); "
        "/usr/share/syslinux/isolinux.bin, /usr/share/syslinux/ldlinux.c32, "
        "/usr/share/syslinux/isohdpfx.bin (add package syslinux)")
    assert not (out / "test").exists() and [p.name for p in out.iterdir()] == []


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    profile = tmp_path / "broken.yaml"
    profile.write_text("name: x\noutputs: [\n")
    code, err, out, cache = build(profile, tmp_path)
    assert code == 2
    assert error_line(err).startswith(f"{profile}: invalid YAML at line 3")
    yaml.safe_load("a: 1")  # keep the import honest
