"""A real threaded HTTP server on 127.0.0.1 serving a directory, with fault injection.

    with serve_directory(root) as server:
        server.faults.fail("v3.20/x.tar.gz", times=2)          # 500 twice, then serve
        server.faults.reset("v3.20/x.tar.gz", times=1)         # close mid-body once
        server.faults.truncate("v3.20/x.tar.gz", times=1)      # short body, honest length
        server.faults.missing("v3.20/x.tar.gz.asc")            # 404 even if the file exists
        server.faults.stall("v3.20/x.tar.gz", times=1, seconds=2)  # answer nothing for 2 s
        server.faults.headers("v3.20/x.tar.gz", {"Content-Length": "²"})  # raw header values
        fetch(server.url + "/v3.20/x.tar.gz")
        server.count("v3.20/x.tar.gz"); server.requests_for("...")[1].headers["Range"]

Paths in the fault table and in ``count`` are URL paths with or without the leading
slash. ``Range: bytes=N-`` and ``bytes=N-M`` are honoured with 206 answers.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def _key(path: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(path).path).lstrip("/")


@dataclass
class _PathFaults:
    fail_status: int = 500
    fail_times: int = 0
    reset_times: int = 0
    reset_after: int | None = None
    truncate_times: int = 0
    truncate_to: int | None = None
    stall_times: int = 0
    stall_seconds: float = 0.0
    not_found: bool = False
    headers: dict[str, str] = field(default_factory=dict)


class Faults:
    """Per-path failure plan; each fault is used up as requests arrive (fail, then reset,
    then truncate)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plan: dict[str, _PathFaults] = {}

    def _get(self, path: str) -> _PathFaults:
        return self._plan.setdefault(_key(path), _PathFaults())

    def fail(self, path: str, *, times: int, status: int = 500) -> None:
        """Answer ``status`` (no body) to the next ``times`` requests."""
        with self._lock:
            faults = self._get(path)
            faults.fail_times, faults.fail_status = times, status

    def reset(self, path: str, *, times: int, after: int | None = None) -> None:
        """Send headers and ``after`` body bytes (default: half), then drop the connection."""
        with self._lock:
            faults = self._get(path)
            faults.reset_times, faults.reset_after = times, after

    def truncate(self, path: str, *, times: int, to: int | None = None) -> None:
        """Serve only ``to`` bytes (default: half) with a matching Content-Length."""
        with self._lock:
            faults = self._get(path)
            faults.truncate_times, faults.truncate_to = times, to

    def stall(self, path: str, *, times: int, seconds: float) -> None:
        """Wait ``seconds`` before answering the next ``times`` requests (client timeouts)."""
        with self._lock:
            faults = self._get(path)
            faults.stall_times, faults.stall_seconds = times, seconds

    def missing(self, path: str) -> None:
        """Answer 404 for this path from now on."""
        with self._lock:
            self._get(path).not_found = True

    def headers(self, path: str, values: dict[str, str]) -> None:
        """Send these header values (replacing composer's, e.g. Content-Length) from now on;
        the connection then closes after the body, so a client can read to its end."""
        with self._lock:
            self._get(path).headers = dict(values)

    def header_values(self, path: str) -> dict[str, str]:
        with self._lock:
            faults = self._plan.get(_key(path))
            return dict(faults.headers) if faults else {}

    def clear(self) -> None:
        with self._lock:
            self._plan.clear()

    def stall_seconds(self, path: str) -> float:
        with self._lock:
            faults = self._plan.get(_key(path))
            return faults.stall_seconds if faults else 0.0

    def take(self, path: str) -> tuple[str, int | None]:
        """The action for one request: ("serve"|"404"|"stall"|"fail"|"reset"|"truncate", arg)."""
        with self._lock:
            faults = self._plan.get(_key(path))
            if faults is None:
                return "serve", None
            if faults.not_found:
                return "404", None
            if faults.stall_times:
                faults.stall_times -= 1
                return "stall", None
            if faults.fail_times:
                faults.fail_times -= 1
                return "fail", faults.fail_status
            if faults.reset_times:
                faults.reset_times -= 1
                return "reset", faults.reset_after
            if faults.truncate_times:
                faults.truncate_times -= 1
                return "truncate", faults.truncate_to
            return "serve", None


@dataclass(frozen=True)
class RequestRecord:
    path: str
    headers: dict[str, str]


@dataclass
class Server:
    """A running server: ``url`` (no trailing slash), ``faults``, and the request log."""

    url: str
    root: Path
    faults: Faults
    requests: list[RequestRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def log(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def requests_for(self, path: str) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if r.path == _key(path)]

    def count(self, path: str) -> int:
        return len(self.requests_for(path))

    def url_for(self, path: str) -> str:
        return f"{self.url}/{_key(path)}"


def _make_handler(server: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            path = _key(self.path)
            server.log(RequestRecord(path=path, headers=dict(self.headers.items())))
            action, argument = server.faults.take(path)
            if action == "stall":
                time.sleep(server.faults.stall_seconds(path))
                self.close_connection = True
                return
            if action == "fail":
                self._status_only(argument or 500)
                return
            target = (server.root / path).resolve()
            if action == "404" or not target.is_file() or not target.is_relative_to(server.root):
                self._status_only(404)
                return
            data = target.read_bytes()
            start, end = 0, len(data)
            status = 200
            range_header = self.headers.get("Range")
            if range_header:
                parsed = _parse_range(range_header, len(data))
                if parsed is None:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start, end = parsed
                status = 206
            body = data[start:end]
            if action == "truncate":
                body = body[: argument if argument is not None else len(body) // 2]
            headers = {"Content-Type": "application/octet-stream",
                       "Content-Length": str(len(body))}
            if status == 206:
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
            forced = server.faults.header_values(path)
            if forced:
                headers.update(forced, Connection="close")
                self.close_connection = True
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if action == "reset":
                cut = argument if argument is not None else len(body) // 2
                self.wfile.write(body[:cut])
                self.wfile.flush()
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(body)

        def _status_only(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-`` or ``bytes=a-b`` to a half-open (start, end); None when unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    if not first.isdigit():
        return None
    start = int(first)
    end = int(last) + 1 if last.isdigit() else size
    if start >= size or end <= start:
        return None
    return start, min(end, size)


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up mid-answer are expected here (timeouts, fault tests)."""


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[Server]:
    """Serve ``root`` on 127.0.0.1 (random port) for the duration of the block."""
    state = Server(url="", root=Path(root).resolve(), faults=Faults())
    httpd = _QuietServer(("127.0.0.1", 0), _make_handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="test-http", daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
