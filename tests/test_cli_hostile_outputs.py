"""Artifacts someone else hands you: `verify`, `boot` and the cache read them before any trust.

Each case tampers with a real output folder (the test minirootfs written by composer's
own writers: a tarball, an ISO stand-in, a two-platform OCI layout, SHA256SUMS and
manifest.json), keeps every hash it does not mean to break valid, and runs the CLI in
its own process: one line, the exit code README documents, bounded memory and CPU,
and nothing written.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import run_cli, write_profile
from tests.helpers.gpg import SigningKey
from tests.helpers.hostile import deflate_zeros
from tests.helpers.measure import Measured, run_measured
from tests.helpers.mirror import MirrorInfo, make_minirootfs_tarball
from tests.helpers.outputs import chain, nested_indexes, put, rechain, relist, write_output_folder
from tests.test_cli_errors import assert_nothing_written, error_line

MAX_RSS_KIB = 300 * 1024
MAX_SECONDS = 30


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_output_folder(tmp_path_factory.mktemp("template") / "t", make_minirootfs_tarball())


@pytest.fixture
def folder(template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "out" / "t"
    shutil.copytree(template, copy)
    return copy


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the sha256 of its bytes."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_bounded(tmp_path: Path, *args: str | Path,
                unchanged: Path | None = None) -> tuple[Measured, str]:
    """The CLI from ``tmp_path``; it must stay within bounds and change nothing under
    ``unchanged`` (default: ``tmp_path``)."""
    watched = unchanged or tmp_path
    before = snapshot(watched)
    run = run_measured(*args, cwd=tmp_path)
    assert run.rss_kib < MAX_RSS_KIB, f"peak memory {run.rss_kib} KiB"
    assert run.wall_seconds < MAX_SECONDS, f"took {run.wall_seconds:.1f} s"
    assert snapshot(watched) == before
    line = error_line(run.stderr)
    assert len(line) < 400, line
    return run, line


def _manifest(folder: Path) -> dict[str, object]:
    return json.loads((folder / "manifest.json").read_bytes())  # type: ignore[no-any-return]


def _write_manifest(folder: Path, manifest: dict[str, object], *, size: str | None = None) -> None:
    text = json.dumps(manifest, indent=2).encode()
    if size is not None:
        text = text.replace(b'"SIZE"', size.encode(), 1)
    (folder / "manifest.json").write_bytes(text)


def deep(folder: Path) -> None:
    (folder / "manifest.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)


def long_number(folder: Path) -> None:
    manifest = _manifest(folder)
    manifest["outputs"][0]["size"] = "SIZE"  # type: ignore[index]
    _write_manifest(folder, manifest, size="9" * 5000)


def list_for_path(folder: Path) -> None:
    manifest = _manifest(folder)
    manifest["outputs"][0]["path"] = ["x"]  # type: ignore[index]
    _write_manifest(folder, manifest)


def long_name(folder: Path) -> None:
    """manifest.json and SHA256SUMS agree on a name of 300 characters."""
    old = "t-3.20.3-x86_64.iso"
    new = "a" * 300
    for name in ("manifest.json", "SHA256SUMS"):
        path = folder / name
        path.write_bytes(path.read_bytes().replace(old.encode(), new.encode()))


def nested_1200(folder: Path) -> None:
    layout = folder / "oci"
    (layout / "index.json").write_bytes(nested_indexes(layout, 1200))
    relist(folder)


def layer_bomb(folder: Path) -> None:
    """The first layer inflates to 1 GiB from about 1 MB, every digest above it valid."""
    layout = folder / "oci"
    rechain(layout, layout, "layer", deflate_zeros(1 << 30))
    relist(folder)


MANIFEST = re.escape("/manifest.json: ")


@pytest.mark.parametrize(("tamper", "pattern"), [
    (deep, "{folder}" + MANIFEST + r"JSON nested more than 32 levels deep"),
    (long_number, "{folder}" + MANIFEST + re.escape("not valid JSON (number of 5000 characters "
                                                    "(at most 24))")),
    (list_for_path, "{folder}" + MANIFEST + re.escape("$.outputs[0].path: expected a string, "
                                                      "found an array")),
    (long_name, "{folder}" + re.escape("/SHA256SUMS: line ") + r"\d+: file name 'a{60}…' "
     + re.escape("(300 characters) has a part longer than 255 bytes")),
    (nested_1200, r"index sha256:[0-9a-f]{64} manifests\[0\]: image indexes nested more than "
                  r"8 deep"),
    (layer_bomb, r"layer sha256:[0-9a-f]{64} \(manifest sha256:[0-9a-f]{64} layers\[0\]\): "
                 r"gzip stream inflates to more than \d+ bytes \(64 MiB plus 100 times its "
                 r"\d+ stored bytes\)"),
], ids=lambda v: getattr(v, "__name__", ""))
def test_verify_refuses_tampered_outputs(tmp_path: Path, folder: Path,
                                         tamper: Callable[[Path], None], pattern: str) -> None:
    tamper(folder)
    run, line = run_bounded(tmp_path, "verify", folder)
    assert run.code == 4, run.stderr
    assert re.fullmatch(pattern.replace("{folder}", re.escape(str(folder))), line), line


def test_layer_bomb_costs_its_bound_not_its_size(tmp_path: Path, folder: Path) -> None:
    layer_bomb(folder)
    run, line = run_bounded(tmp_path, "verify", folder)
    assert run.code == 4 and "inflates to more than" in line
    assert run.rss_kib < 120 * 1024, f"peak memory {run.rss_kib} KiB"


@pytest.mark.parametrize(("tamper", "message"), [
    (deep, "manifest.json: JSON nested more than 32 levels deep"),
    (long_number, "manifest.json: not valid JSON (number of 5000 characters (at most 24))"),
    ("path-list", "manifest.json: $.outputs[11].path: expected a string, found an array"),
    ("path-300", "manifest.json: $.outputs[11].path: file name 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa…' (300 characters) has a part longer than 255 bytes"),
    ("path-up", "manifest.json: $.outputs[11].path: file name '../../../etc/passwd' has an empty, "
                "'.' or '..' part"),
], ids=lambda v: getattr(v, "__name__", v if isinstance(v, str) else ""))
def test_boot_refuses_a_hostile_manifest(tmp_path: Path, folder: Path,
                                         tamper: Callable[[Path], None] | str, message: str) -> None:
    if callable(tamper):
        tamper(folder)
    else:
        manifest = _manifest(folder)
        iso = next(o for o in manifest["outputs"] if o["format"] == "iso")  # type: ignore[attr-defined]
        iso["path"] = {"path-list": ["x"], "path-300": "a" * 300,
                       "path-up": "../../../etc/passwd"}[tamper]
        _write_manifest(folder, manifest)
    run, line = run_bounded(tmp_path, "boot", folder, "--print")
    assert run.code == 2, run.stderr
    assert line == f"{folder}/{message}", line


@pytest.mark.parametrize("record", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"url": "URL", "sha256": "' + b"d4" * 32 + b'", "size": 1e999, "fetched_at": 1}',
    b'{"url": ["URL"], "sha256": "' + b"d4" * 32 + b'", "size": 1, "fetched_at": 1}',
    b'{"url": "URL", "sha256": "' + b"d4" * 32 + b'", "size": ' + b"9" * 5000
    + b', "fetched_at": 1}',
], ids=["deep", "infinite-size", "list-url", "long-size"])
def test_a_hostile_cache_record_counts_as_no_record(tmp_path: Path, record: bytes,
                                                    signing_key: SigningKey) -> None:
    """Offline, a poisoned record for the release list is a cache miss (exit 3), naming it."""
    mirror = "http://127.0.0.1:9/alpine"
    url = f"{mirror}/v3.20/releases/x86_64/latest-releases.yaml"
    cache = tmp_path / "cache"
    (cache / "urls").mkdir(parents=True)
    (cache / "urls" / (hashlib.sha256(url.encode()).hexdigest() + ".json")).write_bytes(
        record.replace(b"URL", url.encode()))
    profile = write_profile(tmp_path / "p", mirror_url=mirror, key=signing_key)
    run, line = run_bounded(tmp_path, "fetch", profile, "--cache-dir", cache, "--offline",
                            "--output-dir", tmp_path / "out", unchanged=profile.parent)
    assert_nothing_written(tmp_path / "out", cache)
    assert run.code == 3, run.stderr
    assert line == (f"latest-releases.yaml for v3.20/x86_64: {url} is not in the cache and "
                    "--offline was given; run once without --offline to fill the cache"), line


def test_helpers_keep_digests_valid(folder: Path) -> None:
    """The tampering helpers only break what they mean to: a relisted layout verifies."""
    from composer.verify import verify_outputs

    layout = folder / "oci"
    _, _, manifest = chain(layout)
    assert put(layout, b"x")["size"] == 1
    rechain(layout, layout, "manifest", json.dumps(manifest, sort_keys=True,
                                                  separators=(",", ":")).encode())
    relist(folder)
    assert len(verify_outputs(folder).checked) > 10


def test_rebuild_refuses_a_recorded_release_that_is_not_one(tmp_path: Path, mirror: MirrorInfo,
                                                            signing_key: SigningKey) -> None:
    """manifest.json's releases choose paths under the mirror the rebuild reads: a value
    such as ../../x is refused before anything is fetched."""
    profile = write_profile(tmp_path / "p", mirror_url=mirror.file_url, key=signing_key)
    out = tmp_path / "out"
    assert run_cli("build", profile, "--output-dir", out, "--cache-dir", tmp_path / "c").returncode == 0
    manifest_path = out / "test" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["releases"] = {"x86_64": "../../x"}
    manifest_path.write_text(json.dumps(manifest))
    result = run_cli("verify", "--rebuild", profile, "--output-dir", out, "--cache-dir",
                     tmp_path / "c")
    assert result.returncode == 4, result.stderr
    assert result.stderr.splitlines()[-1].endswith(
        "$.releases.x86_64: 'x86_64': '../../x' is not an architecture and a release (letters, "
        "digits, '.', '_' and '-')"), result.stderr
