"""Fixtures shared by the end-to-end tests: a signed test mirror, served over real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.gpg import SigningKey, make_signing_key, require_gpg
from tests.helpers.httpserver import Server, serve_directory
from tests.helpers.mirror import MirrorInfo, build_mirror

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures" / "alpine-real"


def require_shared() -> Path:
    """The real Alpine artifacts, or a skip saying why they are missing."""
    if not FIXTURES.is_dir():
        pytest.skip(f"real Alpine fixtures not found at {FIXTURES} (../shared is absent)")
    return FIXTURES


@pytest.fixture(scope="session", autouse=True)
def private_tempdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Temporary files of in-process code (spill arenas of trees a test never closes) go
    under pytest's own temporary folder, not the machine's /tmp."""
    import tempfile

    folder = tmp_path_factory.mktemp("tempfiles")
    previous = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = previous


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    require_gpg()
    return make_signing_key(tmp_path_factory.mktemp("release-key"))


@pytest.fixture
def mirror(tmp_path: Path, signing_key: SigningKey) -> MirrorInfo:
    return build_mirror(tmp_path / "mirror", key=signing_key)


@pytest.fixture
def http_mirror(mirror: MirrorInfo) -> Iterator[Server]:
    with serve_directory(mirror.root) as server:
        yield server


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def write_profile(folder: Path, *, mirror_url: str, key: SigningKey, name: str = "test",
                  **fields: Any) -> Path:
    """A profile in ``folder`` trusting ``key`` (its public key saved beside the profile)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "release-key.asc").write_bytes(key.public_armored)
    data: dict[str, Any] = {
        "name": name,
        "branch": "v3.20",
        "arch": "x86_64",
        "mirror": mirror_url,
        "trust": {"fingerprint": key.fingerprint, "key": "release-key.asc"},
        "outputs": [{"format": "tar", "compression": "gzip"}],
    }
    data.update(fields)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_cli(*args: str | os.PathLike[str], cwd: Path | None = None,
            env: dict[str, str] | None = None, umask: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m composer`` as a user would, in a separate process."""
    full_env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    full_env["PYTHONPATH"] = os.fspath(REPO)
    if env:
        full_env.update(env)

    def set_umask() -> None:
        if umask is not None:
            os.umask(umask)

    return subprocess.run([sys.executable, "-m", "composer", *map(os.fspath, args)], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=300,
                          preexec_fn=set_umask)
