"""``format: disk``: a GPT disk image per architecture, raw (``.img``) or qcow2 (``.qcow2``).

``check`` refuses settings no tree can satisfy before any download (and, with
``secure_boot``, a key or certificate that cannot sign); ``write`` builds the raw disk in
the staging folder (:mod:`composer.stages.disk_boot`) and, for qcow2, converts it with the
project's own qcow2 writer, so the bytes never depend on qemu's version.
"""

from __future__ import annotations

import os
from pathlib import Path

from composer.context import BuildContext
from composer.manifest import OutputRecord
from composer.profile.model import DiskOutput
from composer.stages.boot_plan import disk_settings
from composer.stages.disk_boot import check_disk_settings
from composer.stages.kind import OutputJob, artifact_name

SUFFIXES = {"raw": ".img", "qcow2": ".qcow2"}
CERT_SUFFIX = ".crt"


def _where(ctx: BuildContext, output: DiskOutput) -> str:
    index = next(i for i, o in enumerate(ctx.profile.outputs) if o is output)
    return f"{ctx.loaded.path}: outputs[{index}]"


class DiskKind:
    """``format: disk``: ``<name>-<release>-<arch>.img`` or ``.qcow2`` for every architecture."""

    def check(self, ctx: BuildContext, output: DiskOutput) -> None:
        for arch in ctx.profile.arch:
            check_disk_settings(disk_settings(ctx, output, arch.value, "0"),
                                where=_where(ctx, output))
        if output.secure_boot is not None:
            from composer.secure_boot import load_secure_boot

            load_secure_boot(output.secure_boot, ctx.loaded.path.parent, os.environ)

    def claim(self, ctx: BuildContext, output: DiskOutput) -> str:
        return artifact_name(ctx, "<release>", "<arch>", SUFFIXES[str(output.image)])

    def write(self, job: OutputJob, output: DiskOutput) -> list[OutputRecord]:
        from composer.errors import OutputError
        from composer.hashing import hash_file
        from composer.stages.disk_boot import write_disk
        from composer.writers.disk import DiskSizeError

        ctx = job.ctx
        where = _where(ctx, output)
        sign = None
        cert_pem = b""
        if output.secure_boot is not None:
            from composer.secure_boot import load_secure_boot
            from composer.writers.authenticode import sign_pe

            identity = load_secure_boot(output.secure_boot, ctx.loaded.path.parent, os.environ)
            cert_pem = identity.cert_pem()

            def sign(image: bytes) -> bytes:
                return sign_pe(image, identity)

        records = []
        for arch in job.arches:
            settings = disk_settings(ctx, output, arch.arch, arch.release)
            check_disk_settings(settings, where=where)
            name = artifact_name(ctx, arch.release, arch.arch, SUFFIXES[settings.image])
            ctx.log(f"==> writing {name}")
            raw = job.stage / (name if settings.image == "raw" else f".{name}.raw")
            try:
                with open(raw, "w+b") as fh:
                    built = write_disk(arch.tree, settings, fh, epoch=job.epoch,
                                       scratch=job.stage, sign=sign)
            except DiskSizeError as exc:
                raw.unlink(missing_ok=True)
                raise OutputError(f"{where}: {exc.message}") from None
            if settings.image == "qcow2":
                from composer.writers.qcow2 import write_qcow2

                with open(raw, "rb") as source, open(job.stage / name, "wb") as out:
                    write_qcow2(source, built.layout.disk_size, out)
                raw.unlink()
            digest, size = hash_file(job.stage / name)
            records.append(OutputRecord(path=name, sha256=digest, size=size, format="disk",
                                        arch=arch.arch))
            if cert_pem:
                records.append(_write_cert(job.stage, Path(name).stem + CERT_SUFFIX, cert_pem,
                                           arch.arch))
        return records


def _write_cert(stage: Path, name: str, cert_pem: bytes, arch: str) -> OutputRecord:
    """The certificate the UKI is signed with, beside the image, to enroll in the firmware."""
    import hashlib

    (stage / name).write_bytes(cert_pem)
    return OutputRecord(path=name, sha256=hashlib.sha256(cert_pem).hexdigest(),
                        size=len(cert_pem), format="secure-boot-cert", arch=arch)
