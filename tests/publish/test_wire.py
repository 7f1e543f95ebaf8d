"""Image references and the registry's headers: strict parsing of what users and servers send."""

from __future__ import annotations

import pytest

from composer.errors import UsageError
from composer.publish.reference import parse_reference
from composer.publish.wire import (
    RegistryError,
    error_codes,
    error_summary,
    parse_challenge,
    parse_digest,
    parse_length,
    parse_range_end,
    resolve_location,
)

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("text", "registry", "repository", "tag", "digest"), [
    ("registry.example.org/team/web:1.2", "registry.example.org", "team/web", "1.2", None),
    ("127.0.0.1:5000/a/b/c", "127.0.0.1:5000", "a/b/c", "latest", None),
    ("localhost/web", "localhost", "web", "latest", None),
    ("alpine", "docker.io", "library/alpine", "latest", None),
    ("team/web:edge", "docker.io", "team/web", "edge", None),
    ("index.docker.io/library/alpine:3", "docker.io", "library/alpine", "3", None),
    (f"reg.io:443/x@{DIGEST}", "reg.io:443", "x", None, DIGEST),
    (f"reg.io/x:1@{DIGEST}", "reg.io", "x", "1", DIGEST),
    ("[::1]:5000/x:y", "[::1]:5000", "x", "y", None),
])
def test_references(text: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert ref.pinned(DIGEST) == text.split("@")[0] + "@" + DIGEST


def test_docker_hub_api_host() -> None:
    assert parse_reference("alpine").api_host == "registry-1.docker.io"
    assert parse_reference("r.io/x").api_host == "r.io"


@pytest.mark.parametrize(("text", "message"), [
    ("reg.io/Team/web", "repository 'Team/web' is not valid"),
    ("reg.io/web:", "tag '' is not valid"),
    ("reg.io/web:-x", "tag '-x' is not valid"),
    ("reg.io/web@sha256:abc", "is not a sha256 digest"),
    ("reg..io/web", "'reg..io' is not a registry host[:port]"),
    ("reg.io/a//b", "repository 'a//b' is not valid"),
    ("reg.io/" + "a" * 256, "longer than 255"),
])
def test_bad_references(text: str, message: str) -> None:
    with pytest.raises(UsageError, match="image reference .*" + message.replace("[", r"\[")
                       .replace("]", r"\]").replace("(", r"\(")):
        parse_reference(text)


def test_challenges() -> None:
    bearer = parse_challenge('Bearer realm="https://auth.io/token",service="reg.io",'
                             'scope="repository:a/b:pull,push"')
    assert bearer is not None and bearer.scheme == "bearer"
    assert bearer.params == {"realm": "https://auth.io/token", "service": "reg.io",
                             "scope": "repository:a/b:pull,push"}
    basic = parse_challenge('Basic realm="x \\"quoted\\""')
    assert basic is not None and basic.scheme == "basic" and basic.params == {"realm": 'x "quoted"'}
    assert parse_challenge("Basic") == parse_challenge("basic")
    for bad in (None, "", "=x", "Basic " + "x" * 9000, 'Bearer(realm="x")'):
        assert parse_challenge(bad) is None


def test_numbers_and_digests_are_strict() -> None:
    assert parse_length("123") == 123
    for bad in ("-1", "1e3", " ", "１２", "9" * 21, None):
        assert parse_length(bad) is None
    assert parse_digest(DIGEST) == DIGEST
    for bad in ("sha256:" + "AB" * 32, "sha512:" + "ab" * 64, DIGEST + "x", None):
        assert parse_digest(bad) is None
    assert parse_range_end("0-1023") == 1023
    assert parse_range_end("bytes=0-5") == 5
    for bad in ("1-5", "0-", "0-x", "bytes 0-5", None):
        assert parse_range_end(bad) is None


def test_locations() -> None:
    base = "https://reg.io/v2/x/blobs/uploads/"
    assert resolve_location(base, "/v2/x/blobs/uploads/u?_state=s", what="w") == \
        "https://reg.io/v2/x/blobs/uploads/u?_state=s"
    assert resolve_location(base, "https://other.io/up", what="w") == "https://other.io/up"
    for bad in (None, "", "http://reg.io/down", "file:///etc/passwd", "/a b", "/x\r\nSet-Cookie: y"):
        with pytest.raises(RegistryError, match="^w: the registry sent"):
            resolve_location(base, bad, what="w")


def test_error_bodies() -> None:
    body = b'{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match","detail":{}}]}'
    assert error_summary(body, "application/json") == "DIGEST_INVALID: provided digest did not match"
    assert error_codes(body, "application/json; charset=utf-8") == {"DIGEST_INVALID"}
    for bad in (b"[" * 100 + b"]" * 100, b'{"errors": 5}', b"not json", b'{"errors":[{"code":1}]}',
                b"x" * 70000):
        assert error_summary(bad, "application/json") == ""
        assert error_codes(bad, "application/json") == set()
    assert error_summary(body, "text/html") == ""
