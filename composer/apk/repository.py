"""Compatibility name: signed-index verification lives in :mod:`composer.apk.signing`."""

from composer.apk.signing import VerifiedIndex, verify_apkindex

__all__ = ["VerifiedIndex", "verify_apkindex"]
