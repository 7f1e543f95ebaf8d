"""Timestamps as the output formats spell them (OCI, SPDX and CycloneDX all use RFC 3339)."""

from __future__ import annotations

import datetime


def rfc3339(epoch: int) -> str:
    """UTC time of an epoch as ``YYYY-MM-DDTHH:MM:SSZ``."""
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
