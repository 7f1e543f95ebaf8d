"""`make fuzz` targets for every reader of `alpine-composer diff` (and `verify --rebuild`).

Whole artifacts go through :func:`composer.diff.diff_paths` against an unmutated copy:
a tarball (plain and gzip), an oci-archive, a docker-archive, an OCI layout (index,
manifest, config and layer re-chained under valid digests) and a bootable ISO written by
the ISO writer. The format readers also run on their own, seeded with the structures
the ISO holds, so that mutations land in headers rather than in file data: cpio newc,
the FAT image, the UKI's PE headers, the MBR/GPT area, the El Torito catalog and the
ISO 9660 descriptors and directories.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from composer.archive import load_tar
from composer.diff import diff_paths
from composer.diff.cpio import read_cpio
from composer.diff.eltorito import catalog_fields
from composer.diff.fat import FatVolume
from composer.diff.iso9660 import descriptors, walk
from composer.diff.partitions import gpt_fields, mbr_fields
from composer.diff.pe import pe_fields
from composer.diff.source import Budget, DiffLimits, MemoryBytes
from composer.tree import FileTree
from composer.writers.oci import OciImageSpec
from composer.writers.oci_archive import write_docker_archive, write_oci_archive
from tests.helpers import hostile
from tests.helpers.outputs import blob, chain, rechain, write_output_folder

LIMITS = DiffLimits(max_bytes=256 << 20, ratio_floor=32 << 20, max_entries=50_000)
ISO_TOKENS = [b"CD001", b"\x00" * 8, b"\xff\xff\xff\xff", b"EL TORITO SPECIFICATION",
              b"EFI PART", b"\x55\xaa", b"NM", b"PX", b"SL", b"TF", b"CE", b"070701",
              b"TRAILER!!!", b"MZ", b"PE\0\0", b".linux", b"\x90", b"\x91", b"\xef"]
TAR_TOKENS = [b"ustar\x0000", b"ustar  \x00", b" path=", b" size=99999999999\n",
              b"GNU.sparse.map=", b"SCHILY.xattr.", b"x", b"g", b"S", b"\x80\xff\xff\xff"]
JSON_TOKENS = [b"{", b"}", b"[", b"]", b'"', b"null", b"1e999", b"9" * 30, b'"sha256:',
               b'"mediaType": ', b'"application/vnd.oci.image.index.v1+json"', b"[" * 40]


def _budget() -> Budget:
    return Budget(LIMITS, "fuzz")


class _Worker:
    """A folder of the worker's own, for the file a case writes."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        folder = self.root / f"worker-{os.getpid()}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name


def _iso_parts() -> dict[str, bytes]:
    """A BIOS+UEFI ISO from the ISO writer, and the structures it holds."""
    from composer.diff.iso9660 import BLOCK
    from composer.stages.boot import boot_media
    from composer.writers.iso import write_iso
    from tests.stages.test_boot import EPOCH, X86, boot_tree

    tree = boot_tree()
    tree.add_file("lib/apk/db/installed", b"C:Q1abc=\nP:busybox\nV:1.36.1-r1\nA:x86_64\n\n")
    spec = boot_media(tree, X86, epoch=EPOCH)
    out = io.BytesIO()
    write_iso(spec, out)
    iso = out.getvalue()
    files = {f.path: f.data for f in spec.files}
    efi = files["boot/efi.img"]
    initramfs = next(efi[a.offset:a.offset + a.length] for a in spec.aliases
                     if a.path.startswith("boot/initramfs"))
    volume = FatVolume(MemoryBytes(efi, "efi.img"), _budget())
    uki_item = next(i for i in volume.items() if i.path.upper().endswith(".EFI"))
    assert uki_item.data is not None
    uki = uki_item.data.read_at(0, uki_item.data.size)
    image = MemoryBytes(iso, "iso")
    boot = next(d for d in descriptors(image) if d.kind == 0)
    catalog_lba = int.from_bytes(boot.block[71:75], "little")
    return {"iso": iso, "efi": efi, "cpio": gzip.decompress(initramfs), "uki": uki,
            "system area": iso[:32 * 1024], "catalog": iso[catalog_lba * BLOCK:
                                                            (catalog_lba + 1) * BLOCK],
            "volume": iso[:64 * 1024]}


def diff_targets(workdir: Path, minirootfs_tar: bytes, target: Callable[..., Any]) -> list[Any]:
    """The diff targets (``target`` builds a fuzz Target)."""
    root = workdir / "diff"
    root.mkdir(parents=True, exist_ok=True)
    worker = _Worker(root / "cases")
    template = write_output_folder(root / "out", minirootfs_tar)
    layout = template / "oci"
    archive = io.BytesIO()
    write_oci_archive(layout, archive, mtime=1725622440)
    tree = FileTree()
    load_tar(io.BytesIO(minirootfs_tar), tree, source="minirootfs")
    docker = io.BytesIO()
    write_docker_archive([OciImageSpec(tree=tree, arch="x86_64", created=1725622440)], docker,
                         tag="t:1")
    parts = _iso_parts()
    seeds = {"tar": minirootfs_tar, "oci-archive": archive.getvalue(),
             "docker-archive": docker.getvalue(), "iso": parts["iso"]}
    originals = {}
    for name, data in seeds.items():
        originals[name] = root / f"original.{name}"
        originals[name].write_bytes(data)

    def against(name: str) -> Callable[[bytes], None]:
        def run(data: bytes) -> None:
            case = worker.path(f"case.{name}")
            case.write_bytes(data)
            diff_paths(originals[name], case, limits=LIMITS)
        return run

    copies: dict[int, Path] = {}

    def layout_part(part: str) -> Callable[[bytes], None]:
        def run(data: bytes) -> None:
            pid = os.getpid()
            if pid not in copies:
                copies[pid] = worker.path("oci")
                shutil.copytree(layout, copies[pid])
            copy = copies[pid]
            before = set((copy / "blobs" / "sha256").iterdir())
            try:
                if part == "index":
                    (copy / "index.json").write_bytes(data)
                else:
                    rechain(layout, copy, part, data)
                diff_paths(layout, copy, limits=LIMITS)
            finally:
                for path in set((copy / "blobs" / "sha256").iterdir()) - before:
                    path.unlink()
                shutil.copyfile(layout / "index.json", copy / "index.json")
        return run

    _top, nested, manifest = chain(layout)

    config = blob(layout, manifest["config"]["digest"])
    layer = blob(layout, manifest["layers"][0]["digest"])

    def run_cpio(data: bytes) -> None:
        read_cpio(MemoryBytes(data, "cpio").stream(), source="cpio", budget=_budget(),
                  keep=lambda path: 1 << 20 if path.endswith("installed") else 0)

    def run_fat(data: bytes) -> None:
        budget = _budget()
        volume = FatVolume(MemoryBytes(data, "fat"), budget)
        volume.fields()
        for item in volume.items():
            if item.data is not None:
                for _ in item.data.chunks():
                    pass
                pe_fields(item.data, budget, "pe")

    def run_pe(data: bytes) -> None:
        pe_fields(MemoryBytes(data, "pe"), _budget(), "pe")

    def run_partitions(data: bytes) -> None:
        image = MemoryBytes(data, "disk")
        mbr_fields(image)
        gpt_fields(image)

    def run_catalog(data: bytes) -> None:
        catalog_fields(MemoryBytes(data, "catalog"), 0, {})

    def run_volume(data: bytes) -> None:
        image = MemoryBytes(data, "iso")
        for d in descriptors(image):
            if d.kind in (1, 2):
                extent = int.from_bytes(d.block[158:162], "little")
                size = int.from_bytes(d.block[166:170], "little")
                walk(image, extent, size, joliet=d.joliet, budget=_budget())

    tar_bombs = [hostile.SPARSE_MEMBER, hostile.PAX_SPARSE, hostile.PAX_DIGIT_RUN,
                 hostile.PAX_HUGE_SIZE, hostile.BASE256_HUGE_SIZE, hostile.gzip_bomb(1 << 30)]
    return [
        target("diff-tar", [minirootfs_tar], against("tar"), TAR_TOKENS, bombs=tar_bombs),
        target("diff-tar-gz", [gzip.compress(minirootfs_tar, 1, mtime=0)], against("tar"),
               TAR_TOKENS),
        target("diff-oci-archive", [seeds["oci-archive"]], against("oci-archive"),
               TAR_TOKENS + JSON_TOKENS),
        target("diff-docker-archive", [seeds["docker-archive"]], against("docker-archive"),
               TAR_TOKENS + JSON_TOKENS),
        target("diff-oci-index", [(layout / "index.json").read_bytes()], layout_part("index"),
               JSON_TOKENS),
        target("diff-oci-manifest", [blob(layout, nested["manifests"][0]["digest"])],
               layout_part("manifest"), JSON_TOKENS),
        target("diff-oci-config", [config], layout_part("config"), JSON_TOKENS),
        target("diff-oci-layer", [layer], layout_part("layer"), TAR_TOKENS,
               bombs=[hostile.gzip_bomb(1 << 30), hostile.deflate_zeros(1 << 30)]),
        target("diff-iso", [parts["iso"]], against("iso"), ISO_TOKENS),
        target("diff-iso9660", [parts["volume"]], run_volume, ISO_TOKENS),
        target("diff-eltorito", [parts["catalog"]], run_catalog, ISO_TOKENS),
        target("diff-partitions", [parts["system area"]], run_partitions, ISO_TOKENS),
        target("diff-cpio", [parts["cpio"]], run_cpio, ISO_TOKENS,
               bombs=[b"070701" + b"F" * 104, b"070701" + b"0" * 96 + b"FFFFFFFF"]),
        target("diff-fat", [parts["efi"]], run_fat, ISO_TOKENS),
        target("diff-pe", [parts["uki"]], run_pe, ISO_TOKENS),
    ]
