"""Publishing built OCI layouts to registries (the OCI distribution protocol).

``reference`` and ``wire`` are pure (image references, HTTP header grammar); ``credentials``
reads the container tools' auth files and credential helpers; ``session`` is the one HTTP
client (auth challenges, TLS, the fetcher's retry policy); ``blobs`` moves blobs
(existence checks, cross-repository mounts, monolithic and chunked uploads); ``layout``
reads what a build wrote; ``push`` puts it together.
"""
