"""APKINDEX parsing and writing, on synthetic records and the real Alpine indexes."""

from __future__ import annotations

import pytest

from composer.apk.depends import Dependency
from composer.apk.index import PackageInfo, format_apkindex, format_package_record, parse_apkindex
from composer.errors import ArchiveError
from tests.apk import real_indexes

BUSYBOX_BINSH = (
    b"C:Q1oLisfZGMCPUKyVfkRHKxsHWJ/Fg=\n"
    b"P:busybox-binsh\n"
    b"V:1.36.1-r15\n"
    b"A:x86_64\n"
    b"S:1543\n"
    b"I:1\n"
    b"T:busybox ash /bin/sh\n"
    b"U:https://busybox.net/\n"
    b"L:GPL-2.0-only\n"
    b"o:busybox\n"
    b"m:Soeren Tempel <soeren+alpine@soeren-tempel.net>\n"
    b"t:1699379316\n"
    b"c:5d1f7b26cb7ac4a9d3a8bd8be0b4b42d9c6d1b9b\n"
    b"k:100\n"
    b"D:busybox=1.36.1-r15\n"
    b"p:/bin/sh cmd:sh=1.36.1-r15\n"
    b"\n"
)


def test_parse_record_fields() -> None:
    index = parse_apkindex(BUSYBOX_BINSH, source="t", description="3.19.1", repository="iso", tag="x")
    assert index.description == "3.19.1"
    (pkg,) = index.packages
    assert pkg == PackageInfo(
        name="busybox-binsh", version="1.36.1-r15", checksum="Q1oLisfZGMCPUKyVfkRHKxsHWJ/Fg=",
        arch="x86_64", size=1543, installed_size=1, description="busybox ash /bin/sh",
        url="https://busybox.net/", license="GPL-2.0-only", origin="busybox",
        maintainer="Soeren Tempel <soeren+alpine@soeren-tempel.net>", build_time=1699379316,
        commit="5d1f7b26cb7ac4a9d3a8bd8be0b4b42d9c6d1b9b", provider_priority=100,
        depends=(Dependency("busybox", "=", "1.36.1-r15"),),
        provides=(Dependency("/bin/sh"), Dependency("cmd:sh", "=", "1.36.1-r15")),
        repository="iso", tag="x",
    )
    assert pkg.label == "busybox-binsh-1.36.1-r15"
    assert pkg.filename == "busybox-binsh-1.36.1-r15.apk"
    assert format_apkindex(index.packages) == BUSYBOX_BINSH


def test_unknown_fields_are_kept_in_order_and_optional_fields_stay_absent() -> None:
    text = b"P:foo\nV:1-r0\nT:\nZ:upper\nx:lower\nr:bar !baz\nq:5\n\nC:Q1x=\nP:bar\nV:2\n\n"
    index = parse_apkindex(text, source="t")
    foo, bar = index.packages
    assert foo.description == ""
    assert foo.arch is None and foo.size is None and foo.checksum is None
    assert foo.extra == (("Z", "upper"), ("x", "lower"))
    assert foo.replaces == (Dependency("bar"), Dependency("baz", conflict=True))
    assert foo.replaces_priority == 5
    assert format_package_record(bar) == b"C:Q1x=\nP:bar\nV:2\n"
    # Known fields are written in apk's order, unknown ones after them.
    assert format_apkindex(index.packages) == (
        b"P:foo\nV:1-r0\nT:\nr:bar !baz\nq:5\nZ:upper\nx:lower\n\nC:Q1x=\nP:bar\nV:2\n\n"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"P:foo\nV:1\nbroken\n\n", "idx: line 3: expected 'X:value', got 'broken'"),
        (b"P:foo\nV:1\n:x\n\n", "idx: line 3: expected 'X:value', got ':x'"),
        (b"P:foo\n\n", "idx: record at line 1: missing 'V:' field"),
        (b"P:a\nV:1\n\nV:1\n\n", "idx: record at line 4: missing 'P:' field"),
        (b"P:foo\nV:1\nS:12k\n\n", "idx: record at line 1 (foo): field 'S:' is not a number: '12k'"),
        (b"P:foo\nV:1\nP:bar\n\n", "idx: line 3: duplicate field 'P:' in one record"),
        (b"P:foo\nV:1\nD:a=>1\n\n",
         "idx: record at line 1 (foo) field 'D:': invalid dependency 'a=>1': unknown operator '=>'"),
        (b"P:foo\nV:1\nD:a@edge\n\n",
         "idx: record at line 1 (foo) field 'D:': invalid dependency 'a@edge': "
         "a repository tag (@tag) is not allowed here"),
        (b"P:f\xffo\nV:1\n\n", "idx: not UTF-8 text (byte 3)"),
    ],
)
def test_errors(text: bytes, message: str) -> None:
    with pytest.raises(ArchiveError) as info:
        parse_apkindex(text, source="idx")
    assert str(info.value) == message


def test_writer_rejects_newlines_in_values() -> None:
    with pytest.raises(ArchiveError, match="foo-1: a field value contains a newline"):
        format_apkindex([PackageInfo("foo", "1", description="two\nlines")])


def test_empty_index() -> None:
    assert parse_apkindex(b"", source="t").packages == ()
    assert format_apkindex([]) == b""


@pytest.mark.parametrize("relative", sorted(real_indexes.REAL_INDEXES))
def test_real_index_counts_and_byte_exact_round_trip(relative: str) -> None:
    text, description = real_indexes.members(relative)
    count, expected_description = real_indexes.REAL_INDEXES[relative]
    index = parse_apkindex(text, source=relative, description=description)
    assert len(index.packages) == count
    assert index.description == expected_description
    assert format_apkindex(index.packages) == text
    assert all(pkg.checksum and pkg.checksum.startswith("Q1") for pkg in index.packages)


def test_real_iso_index_contents() -> None:
    index = real_indexes.load(real_indexes.ISO_3191)
    by_name = {pkg.name: pkg for pkg in index.packages}
    assert {pkg.arch for pkg in index.packages} == {"x86_64"}
    binsh = by_name["busybox-binsh"]
    assert binsh.checksum == "Q1oLisfZGMCPUKyVfkRHKxsHWJ/Fg="
    assert binsh.provider_priority == 100
    assert [d.format() for d in binsh.provides] == ["/bin/sh", "cmd:sh=1.36.1-r15"]
    ssl_client = by_name["ssl_client"]
    assert [d.format() for d in ssl_client.install_if] == ["busybox=1.36.1-r15", "libssl3"]
    apk_tools = by_name["apk-tools"]
    assert apk_tools.version == "2.14.0-r5"
    assert apk_tools.checksum == "Q1Xe3uPoEqpMGDw0SM8/BaTSfh1OU="
    assert apk_tools.depends[0] == Dependency("musl", ">=", "1.2.3_git20230424")
    assert by_name["musl"].provides == (Dependency("so:libc.musl-x86_64.so.1", "=", "1"),)
