"""The profile: what users write, validated and frozen."""

from composer.profile.load import LoadedProfile, load_profile
from composer.profile.model import Profile

__all__ = ["LoadedProfile", "Profile", "load_profile"]
