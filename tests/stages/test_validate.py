"""The validation pass finds every profile error before any download or write."""

from __future__ import annotations

from pathlib import Path

import pytest

from composer.errors import ComposerError, NotSupportedError, ProfileError
from composer.stages import validate as validate_module
from composer.stages.pipeline import build, fetch
from composer.stages.validate import validate
from tests.conftest import write_profile
from tests.helpers.gpg import SigningKey
from tests.stages.conftest import ContextFor

# Nothing is served here: a check that came after a download would fail with a fetch error.
NOWHERE = "file:///nonexistent/alpine-composer-mirror"


def refused(context_for: ContextFor, folder: Path, key: SigningKey, **fields: object) -> ComposerError:
    profile = write_profile(folder, mirror_url=NOWHERE, key=key, **fields)
    ctx = context_for(profile, offline=True)
    with pytest.raises(ComposerError) as err:
        validate(ctx)
    for step in (build, fetch):
        with pytest.raises(type(err.value)) as again:
            step(ctx)
        assert again.value.message == err.value.message
    assert not ctx.cache_dir.exists() and not ctx.output_dir.exists()
    return err.value


def test_checks_run_in_the_documented_order() -> None:
    assert [c.__name__ for c in validate_module.CHECKS] == [
        "check_writers_exist", "check_packages", "check_local_files", "check_image_config",
        "check_output_outside_overlay", "check_outputs"]


@pytest.mark.parametrize(("arch", "output", "message"), [
    ("aarch64", {"boot": ["bios", "uefi"]},
     "boot: bios is not possible on aarch64 (BIOS boot exists on x86 only); use boot: [uefi]"),
    (["x86_64", "aarch64"], {"boot": ["bios"]},
     "boot: bios is not possible on aarch64 (BIOS boot exists on x86 only); use boot: [uefi]"),
    ("x86_64", {"kernel": "vrit"},
     "kernel 'vrit' is not one of Alpine's flavors (did you mean 'virt'?)"),
    ("x86_64", {"kernel": "linux-virt"},
     "kernel 'linux-virt' is a package name; write the flavor, kernel: virt (the ISO boots "
     "/boot/vmlinuz-virt from package linux-virt)"),
    ("x86_64", {"cmdline": "console=ttyS0\nquiet"},
     "cmdline must be one line (the boot loaders read one line)"),
    ("x86_64", {"cmdline": "console=ttyS0\tquiet"}, "cmdline holds the control character '\\t'"),
    ("x86_64", {"cmdline": "  "},
     "cmdline is empty; the kernel needs at least its console, e.g. 'console=ttyS0,115200'"),
])
def test_iso_settings_are_checked_before_any_download(
        tmp_path: Path, context_for: ContextFor, signing_key: SigningKey, arch: object,
        output: dict[str, object], message: str) -> None:
    err = refused(context_for, tmp_path / "p", signing_key, variant="virt", arch=arch,
                  outputs=[{"format": "iso", **output}])
    assert isinstance(err, ProfileError)
    assert err.message == f"{tmp_path / 'p' / 'test.yaml'}: outputs[0]: {message}"


def test_a_format_without_a_writer(tmp_path: Path, context_for: ContextFor,
                                   signing_key: SigningKey, monkeypatch: pytest.MonkeyPatch) -> None:
    from composer.stages import outputs

    monkeypatch.delitem(outputs.OUTPUT_KINDS, "iso")
    monkeypatch.setitem(outputs.NOT_YET, "iso", "the bootable ISO writer")
    err = refused(context_for, tmp_path / "p", signing_key, variant="virt",
                  outputs=[{"format": "iso"}], packages=["bad name!"])
    assert isinstance(err, NotSupportedError)
    assert err.message == (f"{tmp_path / 'p' / 'test.yaml'}: outputs: format 'iso' (variant virt) "
                           "needs the bootable ISO writer, which this version of alpine-composer "
                           "does not have yet")


def test_two_tars_with_one_compression(tmp_path: Path, context_for: ContextFor,
                                       signing_key: SigningKey) -> None:
    err = refused(context_for, tmp_path / "p", signing_key,
                  outputs=[{"format": "tar"}, {"format": "tar", "compression": "zstd"},
                           {"format": "tar", "compression": "gzip"}])
    assert isinstance(err, ProfileError) and err.exit_code == 2
    assert err.message == (f"{tmp_path / 'p' / 'test.yaml'}: outputs: two outputs would both write "
                           "test-<release>-<arch>.tar.gz; list each format once")


@pytest.mark.parametrize("fmt", ["oci", "oci-archive", "docker-archive"])
def test_image_format_listed_twice(tmp_path: Path, context_for: ContextFor,
                                   signing_key: SigningKey, fmt: str) -> None:
    err = refused(context_for, tmp_path / "p", signing_key,
                  outputs=[{"format": fmt}, {"format": "tar"}, {"format": fmt, "tag": "other"}])
    assert isinstance(err, ProfileError) and err.exit_code == 2
    assert err.message == f"{tmp_path / 'p' / 'test.yaml'}: outputs: format {fmt!r} is listed twice"


def test_docker_archive_is_one_platform(tmp_path: Path, context_for: ContextFor,
                                        signing_key: SigningKey) -> None:
    err = refused(context_for, tmp_path / "p", signing_key, arch=["x86_64", "aarch64"],
                  outputs=[{"format": "docker-archive"}])
    assert isinstance(err, NotSupportedError)
    assert err.message == (f"{tmp_path / 'p' / 'test.yaml'}: outputs: docker-archive holds one "
                           "platform, but arch lists x86_64, aarch64; use oci or oci-archive for "
                           "multi-arch")


def test_repository_rules(tmp_path: Path, context_for: ContextFor, signing_key: SigningKey) -> None:
    err = refused(context_for, tmp_path / "p", signing_key, packages=["busybox"],
                  repositories=["extras"])
    assert isinstance(err, ProfileError)
    assert err.message == ("repositories: 'extras' is neither one of main, community, testing nor "
                           "an http(s):// or file:// URL")


def test_world_constraints(tmp_path: Path, context_for: ContextFor, signing_key: SigningKey) -> None:
    err = refused(context_for, tmp_path / "p", signing_key, packages=["busybox", "a b"])
    assert isinstance(err, ProfileError)
    assert err.message == ("profile packages: invalid dependency 'a b': package name contains "
                           "characters apk does not allow")


def test_packages_base_needs_keys(tmp_path: Path, context_for: ContextFor,
                                  signing_key: SigningKey) -> None:
    err = refused(context_for, tmp_path / "p", signing_key, base="packages", packages=["busybox"])
    assert isinstance(err, ProfileError)
    assert err.message == (f"{tmp_path / 'p' / 'test.yaml'}: keys: base: packages needs the "
                           "repositories' signing keys (there is no minirootfs to take "
                           "/etc/apk/keys from)")


def test_a_good_profile_passes(tmp_path: Path, context_for: ContextFor,
                               signing_key: SigningKey) -> None:
    profile = write_profile(tmp_path / "p", mirror_url=NOWHERE, key=signing_key,
                            packages=["busybox>=1.36"], repositories=["main", "@local file:///r"],
                            outputs=[{"format": "tar"}, {"format": "tar", "compression": "xz"},
                                     {"format": "oci"}, {"format": "oci-archive"},
                                     {"format": "docker-archive"}])
    assert validate(context_for(profile)) is None
