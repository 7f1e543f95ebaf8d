"""The strict tar reader: it reads what tarfile writes, and refuses the rest with ArchiveError."""

from __future__ import annotations

import io
import tarfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from composer.errors import ArchiveError
from composer.tarread import TarLimits, TarReader, parse_pax, read_tar_bytes
from tests.helpers import hostile

_names = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x2FF,
                                        blacklist_characters="/\\"), min_size=1, max_size=40)
_paths = st.lists(_names, min_size=1, max_size=5).map("/".join)
_member = st.tuples(
    _paths,
    st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.FIFOTYPE]),
    st.binary(max_size=1500),
    st.integers(0, 0o7777),
    st.integers(0, 2**21 - 1),
    st.integers(0, 2**33 - 1),
    st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.text(max_size=30), max_size=2),
)


def _write(members: list[tuple[str, bytes, bytes, int, int, int, dict[str, str]]],
           fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as archive:
        for name, kind, data, mode, uid, mtime, xattrs in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = mode
            info.uid = info.gid = uid
            info.mtime = mtime
            if kind == tarfile.SYMTYPE:
                info.linkname = "target/" + name
            if fmt == tarfile.PAX_FORMAT:
                info.pax_headers = {"SCHILY.xattr.user." + k: v for k, v in xattrs.items()}
            content = data if kind == tarfile.REGTYPE else b""
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buf.getvalue()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_member, max_size=6), st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT,
                                                        tarfile.PAX_FORMAT]))
def test_reads_what_tarfile_writes(members: list[tuple[str, bytes, bytes, int, int, int,
                                                       dict[str, str]]], fmt: int) -> None:
    try:
        data = _write(members, fmt)
    except ValueError:
        return  # a name or number this format cannot hold
    reference = []
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for info in archive:
            body = archive.extractfile(info).read() if info.isreg() else b""  # type: ignore[union-attr]
            reference.append((info.name, info.type, body, info.mode, info.uid, info.gid,
                              int(info.mtime), info.linkname, dict(info.pax_headers)))
    reader = TarReader(io.BytesIO(data), source="t")
    ours = []
    for member in reader:
        body = bytes(reader.read_content(member)) if member.isreg() else b""
        ours.append((member.name, member.type, body, member.mode, member.uid, member.gid,
                     member.mtime, member.linkname, dict(member.pax_headers)))
    assert ours == reference


def _valid_tar() -> bytes:
    return _write([("etc/motd", tarfile.REGTYPE, b"hello\n" * 30, 0o644, 0, 1, {"a": "b"}),
                   ("etc", tarfile.DIRTYPE, b"", 0o755, 0, 1, {}),
                   ("bin/sh", tarfile.SYMTYPE, b"", 0o777, 0, 1, {})], tarfile.PAX_FORMAT)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 4096), st.binary(min_size=1, max_size=64), st.booleans())
def test_damaged_headers_raise_only_archive_errors(at: int, patch: bytes, cut: bool) -> None:
    data = bytearray(_valid_tar())
    data[at:at + len(patch)] = patch
    if cut:
        del data[at + len(patch):]
    try:
        read_tar_bytes(bytes(data), source="t", regular_only=False)
    except ArchiveError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_pax_records_parse_or_fail_cleanly(body: bytes) -> None:
    try:
        records = parse_pax(body, where="p")
    except ArchiveError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in records.items())


@given(st.dictionaries(st.from_regex(r"[A-Za-z.]{1,20}", fullmatch=True), st.text(max_size=200),
                       max_size=5))
def test_pax_records_round_trip(records: dict[str, str]) -> None:
    body = b"".join(hostile.pax_record(k, v) for k, v in records.items())
    assert parse_pax(body, where="p") == records


def test_limits_are_checked_before_content_is_read() -> None:
    data = _write([("big", tarfile.REGTYPE, b"x" * 5000, 0o644, 0, 0, {})], tarfile.USTAR_FORMAT)
    with pytest.raises(ArchiveError, match=r"^t: not a readable tar archive \(member 'big' "
                                           r"declares 5000 bytes, more than the 4096-byte limit\)$"):
        list(TarReader(io.BytesIO(data), source="t", limits=TarLimits(max_member=4096)))
    with pytest.raises(ArchiveError, match=r"extended header of 69999 bytes is larger than the "
                                           r"65536-byte limit"):
        list(TarReader(io.BytesIO(hostile.pax_member(hostile.pax_record("k", "v" * 69_990))),
                       source="t", limits=TarLimits(max_extended=65536)))


def test_bad_checksum_and_foreign_magic() -> None:
    data = bytearray(hostile.header("f", b"0", 0) + hostile.end())
    data[0] = ord("g")
    with pytest.raises(ArchiveError, match=r"\(bad header checksum\)$"):
        read_tar_bytes(bytes(data), source="t")
    data = bytearray(hostile.header("f", b"0", 0) + hostile.end())
    data[257:263] = b"nostar"
    with pytest.raises(ArchiveError, match=r"\(not a ustar or GNU tar header\)$"):
        read_tar_bytes(bytes(data), source="t")


def test_gnu_long_names_and_cut_archives() -> None:
    name = "d/" * 80 + "file"
    data = _write([(name, tarfile.REGTYPE, b"x", 0o644, 0, 0, {})], tarfile.GNU_FORMAT)
    cut = data[:3 * 512]  # long-name header, its body, the member header + content block
    files = read_tar_bytes(data[:4 * 512], source="t")
    assert [(f.name, f.data) for f in files] == [(name, b"x")]
    with pytest.raises(ArchiveError, match="truncated"):
        read_tar_bytes(cut + b"\0" * 100, source="t")
