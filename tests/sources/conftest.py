"""Fixtures for composer.sources tests: gpg keys (once per session), caches, fetchers."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from composer.sources.cache import ContentCache
from composer.sources.fetch import Fetcher, FetchSettings
from tests.helpers.gpg import SigningKey, gpg_available, make_signing_key, stop_agent
from tests.helpers.httpserver import Server, serve_directory


def _key(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[SigningKey]:
    if not gpg_available():
        pytest.skip("gpg is not installed (apt-get install gnupg)")
    key = make_signing_key(tmp_path_factory.mktemp("gpg"), name=name)
    yield key
    stop_agent(key)


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigningKey]:
    yield from _key(tmp_path_factory, "Release Signer <release@example.invalid>")


@pytest.fixture(scope="session")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigningKey]:
    yield from _key(tmp_path_factory, "Someone Else <else@example.invalid>")


@pytest.fixture
def cache(tmp_path: Path) -> ContentCache:
    return ContentCache(tmp_path / "cache")


@pytest.fixture
def make_fetcher(cache: ContentCache) -> Callable[..., Fetcher]:
    """Fetcher factory with tiny backoff; keyword arguments override FetchSettings."""

    def make(**overrides: Any) -> Fetcher:
        settings: dict[str, Any] = {"backoff": 0.01, "connect_timeout": 5, "read_timeout": 10}
        settings.update(overrides)
        return Fetcher(FetchSettings(**settings), cache)

    return make


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Server]:
    """A real HTTP server on 127.0.0.1 serving tmp_path/'www'."""
    root = tmp_path / "www"
    root.mkdir()
    with serve_directory(root) as server:
        yield server


@pytest.fixture(scope="session")
def payload() -> bytes:
    """300 KiB of fixed pseudo-random bytes: several read chunks, so cuts land mid-body."""
    return random.Random(1234).randbytes(300 * 1024)
