"""Everything that reaches outside the process for inputs: network, file:// and the cache.

``fetch.Fetcher`` is the only code that opens sockets; ``cache.ContentCache``
is the only code that writes the download cache. ``releases`` parses release
metadata (pure), ``trust`` checks OpenPGP signatures and ``minirootfs`` ties
them together into a verified release tarball.
"""
