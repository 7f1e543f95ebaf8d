"""Files of an ISO as pycdlib itself reads them back (by Rock Ridge path)."""

from __future__ import annotations

import io

import pycdlib


def files_of(iso: pycdlib.PyCdlib) -> dict[str, bytes]:
    """Every file of an open ISO by its Rock Ridge path (no leading slash)."""
    found = {}
    for root, _dirs, files in iso.walk(rr_path="/"):
        for name in files:
            path = f"{root.rstrip('/')}/{name}"
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path=path)
            found[path.lstrip("/")] = buf.getvalue()
    return found
