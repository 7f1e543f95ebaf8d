"""Rules said once: the file hasher, the URL rule and mirror layout, the cache folder."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from composer.context import BuildContext
from composer.hashing import CHUNK, hash_file, hash_stream
from composer.profile import load_profile
from composer.urls import is_url, mirror_url, repository_file_url


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7])
def test_hash_file_matches_hashlib(tmp_path: Path, size: int) -> None:
    data = bytes(i % 251 for i in range(size))
    path = tmp_path / "f"
    path.write_bytes(data)
    expected = (hashlib.sha256(data).hexdigest(), size)
    assert hash_file(path) == expected
    stream = io.BytesIO(b"skipped" + data)
    stream.read(7)
    assert hash_stream(stream) == expected


@pytest.mark.parametrize(("text", "url"), [
    ("https://dl-cdn.alpinelinux.org/alpine", True), ("http://127.0.0.1:8080/a", True),
    ("file:///srv/alpine", True), ("ftp://host/x", False), ("keys/x.rsa.pub", False),
    ("/abs/path", False), ("HTTPS://upper", False), ("https:/one-slash", False),
])
def test_is_url(text: str, url: bool) -> None:
    assert is_url(text) is url


def test_mirror_layout() -> None:
    assert mirror_url("https://m/alpine/", "v3.20", "releases", "x86_64") == \
        "https://m/alpine/v3.20/releases/x86_64"
    assert mirror_url("file:///m", "edge", "main") == "file:///m/edge/main"
    assert repository_file_url("file:///m/edge/main", "aarch64", "APKINDEX.tar.gz") == \
        "file:///m/edge/main/aarch64/APKINDEX.tar.gz"


def test_context_uses_the_xdg_cache_rule(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("name: p\n")
    loaded = load_profile(profile)

    def cache(env: dict[str, str]) -> Path:
        return BuildContext.from_environment(loaded, env=env, output_dir=None, cache_dir=None,
                                             progress=False).cache_dir

    assert cache({"XDG_CACHE_HOME": "/x/cache", "HOME": "/h"}) == Path("/x/cache/alpine-composer")
    assert cache({"XDG_CACHE_HOME": "relative", "HOME": "/h"}) == Path("/h/.cache/alpine-composer")
    assert cache({"XDG_CACHE_HOME": "", "HOME": "/h"}) == Path("/h/.cache/alpine-composer")
