"""A registry is hostile input: a real HTTP server on 127.0.0.1 answering what no honest
registry would, and the one-line errors a push gives for it. Also the blob-location hints."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from composer.errors import ComposerError
from composer.publish.layout import read_plan
from composer.publish.locations import BlobLocations
from composer.publish.push import push_plan
from composer.publish.reference import parse_reference
from composer.publish.session import RegistrySettings
from composer.publish.wire import RegistryError
from composer.sources.fetch import FetchSettings
from composer.writers.oci import write_oci_layout
from tests.writers.oci_trees import small_tree
from tests.writers.test_oci_tools import image_spec

Answer = Callable[[http.server.BaseHTTPRequestHandler], None]


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], str]]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(answer: Answer) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_HEAD(self) -> None:  # noqa: N802
                answer(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_HEAD  # noqa: N815

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def reply(handler: http.server.BaseHTTPRequestHandler, status: int, headers: dict[str, str],
          body: bytes = b"") -> None:
    handler.send_response(status)
    for key, value in {"Content-Length": str(len(body)), **headers}.items():
        handler.send_header(key, value)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def push_to(host: str, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    write_oci_layout(layout, [image_spec(small_tree())], tag="1")
    settings = RegistrySettings(network=FetchSettings(retries=1, backoff=0.01), insecure=True,
                                env={"HOME": str(tmp_path)})
    push_plan(read_plan(layout), [parse_reference(f"{host}/team/x:1")], settings)


def test_an_upload_location_elsewhere_is_refused(serve: Callable[[Answer], str], tmp_path: Path) -> None:
    def answer(h: http.server.BaseHTTPRequestHandler) -> None:
        if h.command == "POST":
            reply(h, 202, {"Location": "file:///etc/passwd"})
        else:
            reply(h, 404, {})

    host = serve(answer)
    with pytest.raises(RegistryError, match=f"^{host}/team/x: uploading config sha256:[0-9a-f]{{12}}: "
                       "the registry sent a Location with an unusable scheme: 'file:///etc/passwd'$"):
        push_to(host, tmp_path)


def test_a_blob_of_the_wrong_size_and_huge_error_bodies(serve: Callable[[Answer], str],
                                                        tmp_path: Path) -> None:
    host = serve(lambda h: reply(h, 200, {"Content-Length": "99999999999"}))
    with pytest.raises(RegistryError, match="the registry has it with 99999999999 bytes, but it has"):
        push_to(host, tmp_path)
    body = b'{"errors":[{"code":"DENIED","message":"' + b"x" * 200_000 + b'"}]}'
    host = serve(lambda h: reply(h, 400, {"Content-Type": "application/json"}, body))
    with pytest.raises(ComposerError) as caught:
        push_to(host, tmp_path)
    assert caught.value.exit_code == 3
    assert str(caught.value).endswith(": HTTP 400 Bad Request")  # the body is not echoed
    host = serve(lambda h: reply(h, 401, {"WWW-Authenticate": "Negotiate"}))
    with pytest.raises(RegistryError, match="asks for 'negotiate' authentication, which "
                       r"alpine-composer does not speak \(Basic and Bearer only\)$"):
        push_to(host, tmp_path)
    host = serve(lambda h: reply(h, 401, {"WWW-Authenticate": 'Basic realm="r"'}))
    with pytest.raises(RegistryError, match=r"HTTP 401 unauthorized \(no credentials found"):
        push_to(host, tmp_path)
    host = serve(lambda h: reply(h, 503, {}))
    with pytest.raises(ComposerError, match=r"team/x: checking config .*: HTTP 503 after 2 attempts"):
        push_to(host, tmp_path)


def test_blob_locations_remember_and_forget(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "registry-blobs.json"
    places = BlobLocations(path)
    places.add("r.io", "a", ["sha256:1", "sha256:2"])
    places.add("r.io", "b", ["sha256:1"])
    places.save()
    again = BlobLocations(path)
    assert again.repositories("r.io", "sha256:1") == ["b", "a"]
    assert again.repositories("other.io", "sha256:1") == []
    for repo in "cdefghijk":
        again.add("r.io", repo, ["sha256:1"])
    assert again.repositories("r.io", "sha256:1") == list("kjihgfedc")[:8]
    path.write_bytes(b'{"registries": {"r.io": {"sha256:1": "not a list"}}}')
    assert BlobLocations(path).repositories("r.io", "sha256:1") == []
    path.write_bytes(b"[" * 100)
    assert BlobLocations(path).known == {}
