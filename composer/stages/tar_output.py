"""``format: tar``: one compressed rootfs tarball per architecture."""

from __future__ import annotations

from composer.context import BuildContext
from composer.manifest import OutputRecord
from composer.profile.model import Compression, TarOutput
from composer.stages.kind import OutputJob, artifact_name, progress_bar


class TarKind:
    """``format: tar``: one compressed rootfs tarball per architecture."""

    def check(self, ctx: BuildContext, output: TarOutput) -> None:
        return None

    def claim(self, ctx: BuildContext, output: TarOutput) -> str:
        return artifact_name(ctx, "<release>", "<arch>", ".tar" + output.compression.suffix)

    def write(self, job: OutputJob, output: TarOutput) -> list[OutputRecord]:
        from composer.writers.compress import open_compressor
        from composer.writers.stream import HashingWriter
        from composer.writers.tar import ROOTFS_STYLE, write_tar

        ctx = job.ctx
        compression = Compression(output.compression)
        records = []
        for arch in job.arches:
            name = artifact_name(ctx, arch.release, arch.arch, ".tar" + compression.suffix)
            ctx.log(f"==> writing {name}")
            with open(job.stage / name, "wb") as fh, \
                    progress_bar(ctx, len(arch.tree), name) as bar:
                hashed = HashingWriter(fh)
                with open_compressor(hashed, compression) as comp:  # type: ignore[arg-type]
                    write_tar(arch.tree, comp, mtime=job.epoch,  # type: ignore[arg-type]
                              style=ROOTFS_STYLE, on_entry=bar)
            records.append(OutputRecord(path=name, sha256=hashed.hexdigest, size=hashed.size,
                                        format="tar", arch=arch.arch))
        return records
