"""Firmware for ``boot --secure-boot``: OVMF's Secure Boot build and a variable store with
the image's certificate enrolled, prepared in a temporary folder the caller removes.

The certificate goes into db (what may boot), and also becomes PK and KEK, so the
firmware is in user mode with Secure Boot enforcing; Microsoft's keys are not enrolled, so
only images signed with this certificate boot. ``virt-fw-vars`` (the ``virt-firmware``
package on PyPI) edits the variable store: a dependency of this command only, looked up
when it runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from composer.errors import UsageError
from composer.vm import BootImage, MissingToolError, SecureBootFirmware

SECURE_CODE = ("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "/usr/share/OVMF/OVMF_CODE.secboot.fd")
"""OVMF built with SMM and Secure Boot (Debian's ovmf), and its variable templates."""
VARS_TEMPLATE = {"/usr/share/OVMF/OVMF_CODE_4M.secboot.fd": "/usr/share/OVMF/OVMF_VARS_4M.fd",
                 "/usr/share/OVMF/OVMF_CODE.secboot.fd": "/usr/share/OVMF/OVMF_VARS.fd"}
VIRT_FW_VARS = "virt-fw-vars"
OWNER = uuid.UUID("a1b0c2d3-5e4f-4c6a-9b7d-636f6d706f73")
"""The owner GUID recorded with the enrolled certificate (any fixed GUID does)."""
VARIABLES_NAME = "OVMF_VARS.secboot.fd"


def secure_boot_certificate(image: BootImage) -> Path:
    """The certificate to enroll for ``image``: the one its build wrote beside it."""
    if image.disk_format is None:
        raise UsageError("--secure-boot is for disk images (their UKI is signed; an ISO's boot "
                         "loader is not)")
    if image.cert is None:
        raise UsageError(f"--secure-boot: {image.path.name} has no certificate beside it "
                         f"({image.path.with_suffix('.crt').name}); build it with secure_boot")
    return image.cert


def secure_firmware() -> tuple[Path, Path]:
    """OVMF's Secure Boot code and the variable template that goes with it."""
    for code in SECURE_CODE:
        if os.path.exists(code) and os.path.exists(VARS_TEMPLATE[code]):
            return Path(code), Path(VARS_TEMPLATE[code])
    raise MissingToolError("no OVMF Secure Boot firmware (OVMF_CODE_4M.secboot.fd) found "
                           "(apt-get install ovmf)")


def virt_fw_vars() -> str:
    """The ``virt-fw-vars`` program: on PATH, or beside this Python (a virtualenv)."""
    found = shutil.which(VIRT_FW_VARS)
    beside = Path(sys.executable).parent / VIRT_FW_VARS
    if found is None and beside.is_file() and os.access(beside, os.X_OK):
        found = str(beside)
    if found is None:
        raise MissingToolError(f"{VIRT_FW_VARS} is not installed (pip install virt-firmware); "
                               "boot --secure-boot needs it to enroll the certificate")
    return found


def prepare_secure_boot(cert: Path, folder: Path) -> SecureBootFirmware:
    """OVMF's Secure Boot firmware, with a copy of its variables in ``folder`` that has
    ``cert`` enrolled as PK, KEK and db."""
    code, template = secure_firmware()
    program = virt_fw_vars()
    variables = folder / VARIABLES_NAME
    owner = str(OWNER)
    result = subprocess.run(
        [program, "--input", str(template), "--output", str(variables),
         "--set-pk", owner, str(cert), "--add-kek", owner, str(cert),
         "--add-db", owner, str(cert), "--secure-boot", "--no-microsoft"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not variables.is_file():
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise UsageError(f"--secure-boot: {VIRT_FW_VARS} could not enroll {cert}: "
                         f"{lines[-1] if lines else f'exit status {result.returncode}'}")
    return SecureBootFirmware(code, variables)
