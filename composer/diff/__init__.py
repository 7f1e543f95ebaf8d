"""The semantic diff: what differs between two artifacts or output folders, by name.

``diff_paths(a, b)`` returns a :class:`DiffReport`: package changes first (added,
removed, upgraded, from manifest.json and the images' apk databases), then files
(content, mode, owner, link target, mtime, device numbers, xattrs), then the formats'
own fields (tar and gzip headers, OCI JSON by path, ISO volume descriptors, El Torito,
MBR and GPT, the initramfs cpio, the EFI FAT image, the UKI's PE sections).
``format_report()`` renders it for people, ``to_json()`` for machines.

One module per format reader (pure: bytes in, values out), ``model`` for what they
produce and how two sides compare, ``report`` for the result, ``engine`` to find and
pair what two paths hold. Every reader works within the bounds of
:class:`DiffLimits`; bad input is an :class:`~composer.errors.ArchiveError`.
"""

from __future__ import annotations

from composer.diff.engine import diff_paths
from composer.diff.report import Change, DiffReport
from composer.diff.source import DiffLimits

__all__ = ["Change", "DiffLimits", "DiffReport", "diff_paths"]
