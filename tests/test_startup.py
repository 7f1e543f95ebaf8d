"""What a command loads before it answers: a guard on start-up cost that does not time anything.

Each case runs the real CLI in its own process under ``python -X importtime`` and reads the
modules it imported from that report. Help and a profile error must not load the stages or
any heavy stack; a tar-only build from a ``file://`` mirror loads what it uses (the tar
writer, the pinned gzip, OpenPGP for the release signature) and none of the OCI, SBOM, ISO,
APK or HTTP stacks; a ``base: packages`` build with SBOMs loads the APK engine and the SBOM
writers but not the OCI writer.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, require_shared, write_profile
from tests.helpers.gpg import SigningKey
from tests.helpers.mirror import MirrorInfo

STACKS = {
    "profile model": ("pydantic", "yaml", "composer.profile"),
    "stages": ("composer.stages", "composer.context", "composer.sources"),
    "APK engine": ("composer.apk", "cryptography"),
    "OCI": ("composer.writers.oci", "composer.writers.oci_archive", "composer.stages.image_outputs"),
    "SBOM": ("composer.writers.sbom", "composer.writers.spdx_ids", "composer.stages.sbom_outputs"),
    "ISO": ("pycdlib", "composer.writers.iso", "composer.writers.fat", "composer.writers.uki",
            "composer.writers.cpio", "composer.stages.boot", "composer.stages.iso_output"),
    "OpenPGP": ("pysequoia", "composer.sources.trust"),
    "HTTP": ("requests", "urllib3", "http.client", "ssl"),
    "zstd and xz": ("zstandard", "cramjam"),
    "progress bars": ("tqdm",),
}
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$")


def imported_modules(*args: str | os.PathLike[str]) -> tuple[subprocess.CompletedProcess[str],
                                                             set[str]]:
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    env["PYTHONPATH"] = os.fspath(REPO)
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "composer",
                             *map(os.fspath, args)], env=env, capture_output=True, text=True)
    modules = {m.group(1) for line in result.stderr.splitlines() if (m := IMPORTED.match(line))}
    assert "composer.cli" in modules, result.stderr[-2000:]
    return result, modules


def loaded_stacks(modules: set[str]) -> set[str]:
    return {stack for stack, names in STACKS.items()
            if any(m == n or m.startswith(n + ".") for m in modules for n in names)}


def test_build_help_loads_no_stack() -> None:
    result, modules = imported_modules("build", "--help")
    assert result.returncode == 0
    assert "usage: alpine-composer build" in result.stdout
    assert loaded_stacks(modules) == set()


def test_profile_error_loads_only_the_profile_model(tmp_path: Path) -> None:
    profile = tmp_path / "typo.yaml"
    profile.write_text("name: typo\nbranch: v3.20\npackges: [curl]\n")
    result, modules = imported_modules("build", profile)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        f"alpine-composer: error: {profile}: packges: unknown key (did you mean 'packages'?)")
    assert loaded_stacks(modules) == {"profile model"}


def test_tar_build_from_a_file_mirror_loads_no_oci_sbom_iso_apk_or_http(
        tmp_path: Path, mirror: MirrorInfo, signing_key: SigningKey) -> None:
    profile = write_profile(tmp_path / "p", mirror_url=mirror.file_url, key=signing_key,
                            sbom=False)
    result, modules = imported_modules("build", profile, "--output-dir", tmp_path / "out",
                                       "--cache-dir", tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / "test" / "test-3.20.3-x86_64.tar.gz").is_file()
    # The release signature is still checked: OpenPGP loads because it is needed.
    assert loaded_stacks(modules) == {"profile model", "stages", "OpenPGP"}
    assert "zlib_ng.zlib_ng" in modules


def test_packages_build_with_sboms_loads_no_oci_iso_openpgp_or_http(tmp_path: Path) -> None:
    """``base: packages`` into a tar with its SBOMs: the APK engine and the SBOM writers load,
    the OCI writer (whose timestamp format the SBOMs share) does not."""
    fixtures = require_shared() / "iso-3.19.1-x86_64" / "apks"
    keys = sorted((require_shared() / "apk-keys").iterdir())
    profile = tmp_path / "packages.json"
    profile.write_text(json.dumps({
        "name": "pkgs", "base": "packages", "branch": "v3.19", "packages": ["busybox"],
        "repositories": [fixtures.resolve().as_uri()], "keys": [os.fspath(k) for k in keys],
        "outputs": [{"format": "tar", "compression": "none"}]}))
    result, modules = imported_modules("build", profile, "--output-dir", tmp_path / "out",
                                       "--cache-dir", tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-2000:]
    assert {p.name for p in (tmp_path / "out" / "pkgs").iterdir()} >= {
        "pkgs-v3.19-x86_64.tar", "pkgs-v3.19-x86_64.spdx.json", "pkgs-v3.19-x86_64.cdx.json"}
    assert loaded_stacks(modules) == {"profile model", "stages", "APK engine", "SBOM"}
