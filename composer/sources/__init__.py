"""Everything that reaches outside the process for inputs: network, file:// and the cache.

``fetch.Fetcher`` is the only code that opens sockets; ``cache.ContentCache``
is the only code that writes the download cache. ``releases`` parses release
metadata (pure), ``trust`` checks OpenPGP signatures and ``minirootfs`` ties
them together into a verified release tarball.
"""

from composer.sources.cache import ContentCache, UrlRecord, default_cache_dir
from composer.sources.fetch import FetchedInput, Fetcher, FetchSettings
from composer.sources.minirootfs import VerifiedMinirootfs, fetch_minirootfs, fetch_release_key
from composer.sources.releases import (
    ReleaseImage,
    parse_checksum_file,
    parse_latest_releases,
    select_release,
)
from composer.sources.trust import ReleaseKey, load_release_key, verify_detached

__all__ = [
    "ContentCache",
    "FetchSettings",
    "FetchedInput",
    "Fetcher",
    "ReleaseImage",
    "ReleaseKey",
    "UrlRecord",
    "VerifiedMinirootfs",
    "default_cache_dir",
    "fetch_minirootfs",
    "fetch_release_key",
    "load_release_key",
    "parse_checksum_file",
    "parse_latest_releases",
    "select_release",
    "verify_detached",
]
