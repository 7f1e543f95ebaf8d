"""`diff` on artifacts someone else hands you (issue 19 item 3): one line, its exit code, in
bounded time, memory and disk, nothing written.

Each shape was a failure of the tarfile-based diff: tarfile exceptions escaping as internal
errors, the CVE-2024-6232 pax shape, a 1 TiB sparse member hashed until the time limit, a
1 GiB layer gzip bomb spilled to a temporary file, a 22 KB archive reaching 1.3 GB.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import tempfile
from pathlib import Path

import pytest

from composer.cli import main
from composer.diff import DiffLimits, diff_paths
from composer.errors import ArchiveError
from tests.conftest import require_shared
from tests.helpers import hostile
from tests.helpers.measure import run_measured
from tests.helpers.outputs import rechain, write_output_folder

MB = 1 << 20


GOOD = hostile.tar_of([("etc/motd", b"hello\n")], pax=True)


def _with_checksum(block: bytearray) -> bytes:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _bad_field(offset: int, value: bytes) -> bytes:
    block = bytearray(hostile.header("x", b"0", 0))
    block[offset:offset + len(value)] = value
    return _with_checksum(block) + hostile.end()


# Inputs on which tarfile raised something else than TarError, or looped, or expanded.
HOSTILE_TARS = {
    "sparse": hostile.SPARSE_MEMBER,
    "pax sparse 1 TiB": hostile.PAX_SPARSE,
    "pax digit run (CVE-2024-6232 shape)": hostile.PAX_DIGIT_RUN,
    "pax size huge": hostile.PAX_HUGE_SIZE,
    "pax mtime inf": hostile.PAX_INF_MTIME,
    "pax size 40 digits": hostile.PAX_SIZE_OVERFLOW,
    "base-256 size": hostile.BASE256_HUGE_SIZE,
    "truncated gzip": hostile.TRUNCATED_GZIP + b"\0" * 600,
    "bad checksum": hostile.header("x")[:148] + b"0000000\0" + hostile.header("x")[156:],
    "size not octal": _bad_field(124, b"9999999999\0"),
    "mode not octal": _bad_field(100, b"-1\0"),
    "negative mtime": _bad_field(136, b"\xff" * 12),
    "global pax header": hostile.header("g", b"g", 0) + hostile.end(),
    "unknown type": hostile.header("x", b"Z", 0) + hostile.end(),
    "pax record without newline": hostile.pax_member(b"10 path=ab") + hostile.end(),
    "pax length past body": hostile.pax_member(b"99 path=a\n") + hostile.end(),
    "NUL in name": hostile.pax_member(hostile.pax_record("path", "a\0b")) + hostile.end(),
    "truncated member": hostile.header("x", b"0", 4096) + b"abc",
    "truncated header": hostile.header("x")[:300],
    "name past the name bound": hostile.pax_member(hostile.pax_record("path", "a" * 5000))
    + hostile.end(),
    "too many extended headers": b"".join(
        hostile.header(f"PaxHeaders/{i}", b"x", 16) + hostile.padded(b"16 comment=abc\n")
        for i in range(12)) + hostile.header("x") + hostile.end(),
}


@pytest.fixture
def private_tmp(tmp_path: Path) -> Path:
    """A temporary folder as tempfile's default, to prove nothing is spilled there."""
    folder = tmp_path / "tempdir"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("name", sorted(HOSTILE_TARS))
def test_hostile_tars_are_one_line_exit_5(name: str, tmp_path: Path, private_tmp: Path,
                                          capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    good, bad = tmp_path / "good.tar", tmp_path / "bad.tar"
    good.write_bytes(GOOD)
    bad.write_bytes(HOSTILE_TARS[name])
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    code = main(["diff", str(good), str(bad)])
    out, err = capsys.readouterr()
    assert code == 5, err
    assert out == "" and err.startswith("alpine-composer: error: ") and err.count("\n") == 1
    assert "internal error" not in err
    assert list(private_tmp.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar", "good.tar", "tempdir"]


def test_sparse_and_digit_run_messages(tmp_path: Path) -> None:
    good = tmp_path / "good.tar"
    good.write_bytes(GOOD)
    for name, expected in (("pax sparse 1 TiB", "sparse members are not supported"),
                           ("pax size huge", "more than the 8589934592-byte limit in total")):
        bad = tmp_path / "bad.tar"
        bad.write_bytes(HOSTILE_TARS[name])
        with pytest.raises(ArchiveError, match=expected):
            diff_paths(good, bad)


def test_cve_2024_6232_pax_shape_is_linear(tmp_path: Path) -> None:
    """A 4 MiB pax body of digit runs and spaces: tarfile's regex backtracked quadratically."""
    body = b"".join(b"%d " % (10 ** 12) for _ in range(300_000))[:4 * MB]
    archive = hostile.header("PaxHeaders/x", b"x", len(body)) + hostile.padded(body) \
        + hostile.header("x") + hostile.end()
    good, bad = tmp_path / "good.tar", tmp_path / "bad.tar.gz"
    good.write_bytes(GOOD)
    bad.write_bytes(gzip.compress(archive, 1))
    run = run_measured("diff", good, bad)
    assert run.code == 5, run.stderr
    assert "extended header of 4194304 bytes is larger than the 1048576-byte limit" in run.stderr
    assert run.cpu_seconds < 5
    small = body[:MB - 4096]
    archive = hostile.header("PaxHeaders/x", b"x", len(small)) + hostile.padded(small) \
        + hostile.header("x") + hostile.end()
    bad.write_bytes(gzip.compress(archive, 1))
    run = run_measured("diff", good, bad)
    assert run.code == 5 and "malformed pax record" in run.stderr
    assert run.cpu_seconds < 5


def test_tar_gzip_bomb_stops_at_its_ratio(tmp_path: Path, private_tmp: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    good, bad = tmp_path / "good.tar", tmp_path / "bomb.tar.gz"
    good.write_bytes(GOOD)
    bomb = hostile.gzip_bomb(1 << 30)
    bad.write_bytes(bomb)
    run = run_measured("diff", good, bad)
    assert run.code == 5
    assert run.stderr.strip().endswith(
        f"{bad}: gzip stream inflates to more than {100 * len(bomb) + 64 * MB} bytes (100 "
        f"times its {len(bomb)} compressed bytes plus 64 MiB)")
    assert run.rss_kib < 200 * 1024
    # The same bound in-process: nothing spilled to a temporary folder.
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    with pytest.raises(ArchiveError, match="inflates to more than"):
        diff_paths(good, bad, limits=DiffLimits(ratio_floor=MB))
    assert list(private_tmp.iterdir()) == []


def test_many_large_pax_values_keep_memory_small(tmp_path: Path) -> None:
    """A 50 KB archive of 48 members whose xattrs are 1 MiB each: values are kept by
    digest, so memory stays near one member's worth."""
    def archive(shift: int) -> bytes:
        members = b"".join(hostile.pax_member(hostile.pax_record(
            "SCHILY.xattr.user.big", chr(97 + (i + shift) % 26) * (MB - 64)), name=f"f{i}")
            for i in range(48))
        return gzip.compress(members + hostile.end(), 9)

    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    a.write_bytes(archive(0))
    b.write_bytes(archive(1))
    assert len(b.read_bytes()) < 80_000
    run = run_measured("diff", a, b, "--json")
    assert run.code == 1, run.stderr
    assert run.rss_kib < 200 * 1024
    assert '"what": "xattr user.big"' in run.stdout and "(1048512 bytes)" in run.stdout


def test_layer_bomb_in_an_oci_layout(tmp_path: Path, private_tmp: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    minirootfs = require_shared() / "minirootfs" / "alpine-minirootfs-3.20.3-x86_64.tar.gz"
    folder = write_output_folder(tmp_path / "out", minirootfs.read_bytes())
    bombed = tmp_path / "bombed"
    shutil.copytree(folder / "oci", bombed)
    bomb = hostile.gzip_bomb(1 << 30)
    rechain(folder / "oci", bombed, "layer", bomb)
    before = sorted(p.name for p in tmp_path.iterdir())
    run = run_measured("diff", folder / "oci", bombed)
    assert run.code == 5, run.stderr
    assert "gzip stream inflates to more than" in run.stderr
    assert f"(100 times its {len(bomb)} compressed bytes plus 64 MiB)" in run.stderr
    assert run.rss_kib < 250 * 1024
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    with pytest.raises(ArchiveError):
        diff_paths(folder / "oci", bombed)
    assert list(private_tmp.iterdir()) == []


def test_nested_index_chain_stops_at_the_nesting_limit(tmp_path: Path) -> None:
    from tests.helpers.outputs import nested_indexes

    minirootfs = require_shared() / "minirootfs" / "alpine-minirootfs-3.20.3-x86_64.tar.gz"
    folder = write_output_folder(tmp_path / "out", minirootfs.read_bytes())
    deep = tmp_path / "deep"
    shutil.copytree(folder / "oci", deep)
    (deep / "index.json").write_bytes(nested_indexes(deep, 1200))
    with pytest.raises(ArchiveError, match="image indexes nested more than 8 deep"):
        diff_paths(folder / "oci", deep)


# -- ISO structures --------------------------------------------------------------------------


def _iso(tmp_path: Path) -> Path:
    from tests.test_diff import _iso as build_iso

    return build_iso(tmp_path, "a.iso")


def _root(data: bytes | bytearray) -> tuple[int, int]:
    return struct.unpack_from("<I4xI", data, 16 * 2048 + 158)


def test_iso_directory_loop_and_extent_outside_the_image(tmp_path: Path) -> None:
    a = _iso(tmp_path)
    data = bytearray(a.read_bytes())
    extent, size = _root(data)
    directory = data[extent * 2048:extent * 2048 + size]
    boot = directory.index(b"BOOT")
    record = boot - 33
    looped = bytearray(data)
    struct.pack_into("<I", looped, extent * 2048 + record + 2, extent)
    b = tmp_path / "loop.iso"
    b.write_bytes(bytes(looped))
    with pytest.raises(ArchiveError, match="is reached twice"):
        diff_paths(a, b)
    outside = bytearray(data)
    struct.pack_into("<I", outside, extent * 2048 + record + 2, 0x7FFFFFF)
    b.write_bytes(bytes(outside))
    with pytest.raises(ArchiveError, match="lie outside|past its end"):
        diff_paths(a, b)
    huge = bytearray(data)
    struct.pack_into("<I", huge, extent * 2048 + record + 10, 0xFFFFFFF0)
    b.write_bytes(bytes(huge))
    with pytest.raises(ArchiveError, match="more than the 4194304 allowed"):
        diff_paths(a, b)


def test_iso_gpt_with_absurd_counts_is_reported_not_read(tmp_path: Path) -> None:
    a = _iso(tmp_path)
    data = bytearray(a.read_bytes())
    struct.pack_into("<I", data, 512 + 80, 0xFFFFFFFF)  # number of partition entries
    b = tmp_path / "b.iso"
    b.write_bytes(bytes(data))
    report = diff_paths(a, b)
    found = {(c.where, c.what): c.b for c in report.changes}
    assert found[("GPT header", "entries")] == 0xFFFFFFFF
    assert found[("GPT header", "entries valid")] == "no (count or entry size out of range)"
    assert found[("GPT header", "header CRC32 valid")] == "no"


def test_inflate_bound_applies_inside_an_iso(tmp_path: Path) -> None:
    """The initramfs inside an ISO is inflated within the same bound as a layer."""
    a = _iso(tmp_path)
    with pytest.raises(ArchiveError, match="inflates to more than 10 bytes"):
        diff_paths(a, _other(tmp_path), limits=DiffLimits(ratio=0, ratio_floor=10))


def _other(tmp_path: Path) -> Path:
    from tests.test_diff import _iso as build_iso

    return build_iso(tmp_path, "b.iso", label="b")


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    good = tmp_path / "good.tar"
    good.write_bytes(GOOD)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code = main(["diff", str(good), str(fifo)])
    assert code == 2


@pytest.mark.parametrize("name", ["pax sparse 1 TiB", "pax digit run (CVE-2024-6232 shape)",
                                  "size not octal", "NUL in name", "truncated gzip"])
def test_verify_rebuild_comparison_of_a_hostile_published_tar(name: str, tmp_path: Path) -> None:
    """verify --rebuild compares the published artifact with the same engine: a hostile
    published tarball is named with the reason it cannot be compared, never a crash."""
    from composer.verify import compare_outputs

    published, rebuilt = tmp_path / "published", tmp_path / "rebuilt"
    published.mkdir()
    rebuilt.mkdir()
    (published / "t.tar").write_bytes(HOSTILE_TARS[name])
    (rebuilt / "t.tar").write_bytes(GOOD)
    [problem] = compare_outputs(published, rebuilt, {"t.tar": "a" * 64}, {"t.tar": "b" * 64})
    assert problem.startswith(f"{published / 't.tar'}: rebuild differs: cannot compare them (")
    assert "\n" not in problem


def test_iso_directory_reads_count_against_the_budget(tmp_path: Path) -> None:
    """Many directory records naming the same large extent cannot multiply the work:
    every directory read is charged to the side's byte budget."""
    from composer.diff.iso9660 import walk
    from composer.diff.source import Budget, MemoryBytes

    data = _iso(tmp_path).read_bytes()
    extent, size = _root(data)
    image = MemoryBytes(data, "a.iso")
    assert walk(image, extent, size, joliet=False, budget=Budget(DiffLimits(), "A"))
    with pytest.raises(ArchiveError, match="passes the diff's limit of 1000 bytes"):
        walk(image, extent, size, joliet=False, budget=Budget(DiffLimits(max_bytes=1000), "A"))
