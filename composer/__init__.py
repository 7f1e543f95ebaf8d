"""alpine-composer: reproducible Alpine Linux root filesystems, images and ISOs."""

__version__ = "0.1.0"
