"""The `make fuzz` target for what a mirror says before its bytes: HTTP status lines and headers.

A real server on 127.0.0.1 (one per worker process) answers each request with the
next raw response of the case, byte for byte as mutated, and closes the connection;
the fetcher downloads through it twice (a download, then a revalidation with the
stored ETag), with one retry so that a resume answered by ``206`` and its
Content-Range is reached too.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
from pathlib import Path
from typing import Any

from composer.sources.cache import ContentCache
from composer.sources.fetch import Fetcher, FetchSettings

NEXT = b"\n--next-response--\n"
HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: 16\r\nETag: \"5f3a-61c\"\r\n"
        b"Last-Modified: Fri, 06 Sep 2024 11:34:00 GMT\r\n\r\n")
BODY = b"0123456789abcdef"
SEEDS = [
    HEAD + BODY,
    b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n01234567" + NEXT
    + b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 8-15/16\r\n"
      b"Content-Length: 8\r\n\r\n89abcdef",
    HEAD + BODY + NEXT + b"HTTP/1.1 304 Not Modified\r\nETag: \"5f3a-61c\"\r\n\r\n",
]
TOKENS = [b"Content-Length: ", b"Content-Range: bytes ", b"ETag: ", b"\r\n", b"\r\n\r\n",
          b"/", b"-", b"*", "²".encode("latin-1"), b"\xb9\xb2\xb3", b"9" * 30, b"HTTP/1.1 206 ",
          b"Transfer-Encoding: chunked\r\n", b"HTTP/1.1 304 ", b", ", NEXT]
BOMBS = [
    HEAD.replace(b"Content-Length: 16", "Content-Length: ²".encode("latin-1")) + BODY,
    HEAD.replace(b"Content-Length: 16", b"Content-Length: " + b"9" * 5000) + BODY,
    HEAD.replace(b"Content-Length: 16", b"Content-Length: 16, 17") + BODY,
    SEEDS[1].replace(b"bytes 8-15/16", b"bytes 8-15/" + b"9" * 5000),
    SEEDS[1].replace(b"bytes 8-15/16", "bytes ⁸-15/16".encode()),
    SEEDS[1].replace(b"bytes 8-15/16", b"bytes 8-15/" + "²".encode("latin-1")),
    HEAD.replace(b'"5f3a-61c"', b'"a\x7f\x01b"') + BODY + NEXT + SEEDS[2].split(NEXT)[1],
    HEAD.replace(b'"5f3a-61c"', b"x" * 70_000) + BODY,
    HEAD.replace(b"\r\n\r\n", b"\r\n" + b"X-A: b\r\n" * 10_000 + b"\r\n") + BODY,
]


class _RawServer:
    """Answers the n-th request of a case with its n-th response (the last one repeated)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.responses: list[bytes] = [b""]
        self.served = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            conn, _ = self.listener.accept()
            with conn, contextlib.suppress(OSError):
                conn.settimeout(5)
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    head += chunk
                index = min(self.served, len(self.responses) - 1)
                self.served += 1
                conn.sendall(self.responses[index])
                conn.shutdown(socket.SHUT_WR)


def http_target(workdir: Path, target: Any) -> Any:
    """The ``http-response`` target (``target`` builds a fuzz Target)."""
    servers: dict[int, tuple[_RawServer, Fetcher]] = {}
    numbers = itertools.count()

    def run(data: bytes) -> None:
        pid = os.getpid()
        if pid not in servers:
            settings = FetchSettings(connect_timeout=5, read_timeout=5, retries=1, backoff=0,
                                     metadata_ttl=0)
            fetcher = Fetcher(settings, ContentCache(workdir / f"http-cache-{pid}"),
                              sleep=lambda _seconds: None)
            servers[pid] = (_RawServer(), fetcher)
        server, fetcher = servers[pid]
        server.responses, server.served = data.split(NEXT), 0
        url = f"http://127.0.0.1:{server.port}/file-{next(numbers)}"
        fetcher.fetch_metadata(url, what="fuzz", max_size=1 << 20)
        fetcher.fetch_metadata(url, what="fuzz", max_size=1 << 20)

    return target("http-response", SEEDS, run, TOKENS, bombs=BOMBS)
