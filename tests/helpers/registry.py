"""A real registry for push tests: Debian's ``docker-registry`` (CNCF distribution) on 127.0.0.1.

    with run_registry(tmp / "reg", users={"alice": "s3cret"}) as reg:   # TLS + htpasswd
        reg.host            # "127.0.0.1:40123"
        reg.ca              # the test CA (PEM) to pass as --ca-cert
        reg.requests()      # [(method, uri, status), …] the registry completed so far
        reg.stop()          # a stopped registry, for connection-refused tests

The certificate is made in the test with openssl (an IP SAN for 127.0.0.1), the htpasswd
file with ``htpasswd -B`` (bcrypt, as distribution requires), the config in a temp folder.
``tls=False`` gives a plain-HTTP registry (for the loopback proxy that cuts connections);
``token=True`` puts distribution's bearer-token auth in front instead of htpasswd, with a
token server on 127.0.0.1 that checks the users' passwords and signs JWTs (RS256, ``x5c``)
with the test certificate's key, which the registry trusts as ``rootcertbundle``.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REGISTRY = "/usr/bin/docker-registry"


def require_registry_tools() -> None:
    for tool in ("docker-registry", "htpasswd", "openssl", "skopeo"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install docker-registry apache2-utils "
                        "openssl skopeo); .ci/run installs them")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


@dataclass
class Registry:
    host: str
    folder: Path
    ca: Path | None
    log: Path
    process: subprocess.Popen[bytes] | None = None
    users: dict[str, str] = field(default_factory=dict)
    tokens: TokenServer | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.ca else "http"

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, uri, status) of every response the registry completed, in order."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("msg") == "response completed":
                found.append((record["http.request.method"], record["http.request.uri"],
                              int(record["http.response.status"])))
        return found

    def uploads(self, since: int = 0) -> list[tuple[str, str, int]]:
        """Requests that move blob bytes or open an upload (mount attempts included)."""
        return [r for r in self.requests()[since:]
                if "/blobs/uploads/" in r[1] and r[0] in ("POST", "PATCH", "PUT")]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _config(folder: Path, port: int, ca: tuple[Path, Path] | None, htpasswd: Path | None,
            token_realm: str | None = None) -> str:
    lines = ["version: 0.1", "log:", "  level: info", "  formatter: json", "  accesslog:",
             "    disabled: true", "storage:", "  filesystem:", f"    rootdirectory: {folder / 'data'}",
             "  delete:", "    enabled: true", "http:", f"  addr: 127.0.0.1:{port}",
             "  secret: alpine-composer-tests"]
    if ca is not None:
        lines += ["  tls:", f"    certificate: {ca[0]}", f"    key: {ca[1]}"]
    if token_realm is not None and ca is not None:
        lines += ["auth:", "  token:", f"    realm: {token_realm}", "    service: test-registry",
                  "    issuer: test-issuer", f"    rootcertbundle: {ca[0]}"]
    elif htpasswd is not None:
        lines += ["auth:", "  htpasswd:", "    realm: alpine-composer-tests", f"    path: {htpasswd}"]
    return "\n".join(lines) + "\n"


def _wait_ready(reg: Registry, deadline: float) -> bool:
    import ssl

    context = ssl.create_default_context(cafile=str(reg.ca)) if reg.ca else None
    while time.monotonic() < deadline:
        if reg.process is not None and reg.process.poll() is not None:
            return False
        try:
            urllib.request.urlopen(f"{reg.scheme}://{reg.host}/v2/", timeout=2, context=context)
            return True
        except urllib.error.HTTPError:
            return True  # 401: up, and asking for credentials
        except OSError:
            time.sleep(0.1)
    return False


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Bearer tokens for distribution's ``auth: token``: every scope asked for, to a user
    whose basic-auth password is right; ``requests`` records each scope string asked."""

    def __init__(self, cert: Path, key: Path, users: dict[str, str]) -> None:
        import ssl

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding

        der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(serialization.Encoding.DER)
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                scopes = query.get("scope", [])
                server.requests.append(" ".join(scopes))
                given = self.headers.get("Authorization", "")
                expected = {"Basic " + base64.b64encode(f"{u}:{p}".encode()).decode(): u
                            for u, p in users.items()}
                if given not in expected:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                access = []
                for scope in " ".join(scopes).split():
                    kind, name, actions = scope.split(":")
                    access.append({"type": kind, "name": name, "actions": actions.split(",")})
                now = int(time.time())
                header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
                claims = {"iss": "test-issuer", "sub": expected[given], "aud": "test-registry",
                          "exp": now + 600, "nbf": now - 60, "iat": now - 60, "jti": str(now),
                          "access": access}
                signing = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
                signature = private.sign(signing.encode(), padding.PKCS1v15(),  # type: ignore[union-attr,call-arg]
                                         hashes.SHA256())
                body = json.dumps({"token": signing + "." + _b64url(signature)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.realm = f"https://127.0.0.1:{self._httpd.server_address[1]}/token"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@contextlib.contextmanager
def run_registry(folder: Path, *, users: dict[str, str] | None = None, tls: bool = True,
                 token: bool = False) -> Iterator[Registry]:
    """Start a registry (TLS and htpasswd users unless turned off) for the block."""
    require_registry_tools()
    folder.mkdir(parents=True, exist_ok=True)
    cert = make_certificate(folder) if tls else None
    tokens = TokenServer(cert[0], cert[1], dict(users or {})) if token and cert else None
    htpasswd = None
    if users:
        htpasswd = folder / "htpasswd"
        text = "".join(subprocess.run(["htpasswd", "-Bbn", name, password], check=True,
                                      capture_output=True, text=True).stdout.strip() + "\n"
                       for name, password in users.items())
        htpasswd.write_text(text)
    for _ in range(5):
        port = free_port()
        config = folder / "config.yml"
        config.write_text(_config(folder, port, cert, htpasswd, tokens.realm if tokens else None))
        log = folder / "registry.log"
        reg = Registry(host=f"127.0.0.1:{port}", folder=folder, ca=cert[0] if cert else None,
                       log=log, users=dict(users or {}), tokens=tokens)
        with open(log, "wb") as out:
            reg.process = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=out,
                                           stderr=subprocess.STDOUT)
        if _wait_ready(reg, time.monotonic() + 20):
            break
        reg.stop()
    else:
        pytest.fail(f"docker-registry did not start; see {folder / 'registry.log'}")
    try:
        yield reg
    finally:
        reg.stop()
        if tokens is not None:
            tokens.close()


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 that forwards to ``target`` and, once, drops the client's
    connection: after ``cut_after`` bytes came from clients (mid-chunk: the registry has part
    of it), or (plain HTTP only) when the ``cut_patch``-th ``PATCH`` request starts, before
    any of it reaches the registry (the upload can be resumed where it stood)."""

    def __init__(self, target: str, *, cut_after: int | None = None,
                 cut_patch: int | None = None) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.cut_after = cut_after
        self.cut_patch = cut_patch
        self.patches = 0
        self.sent = 0
        self.cuts = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._server.getsockname()[1]}"
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_client:
                    with self._lock:
                        self.sent += len(data)
                        self.patches += data.startswith(b"PATCH ")
                        cut = self.cuts == 0 and (
                            (self.cut_after is not None and self.sent > self.cut_after)
                            or (data.startswith(b"PATCH ") and self.patches == self.cut_patch))
                        if cut:
                            self.cuts += 1
                    if cut:
                        for sock in (source, sink):
                            with contextlib.suppress(OSError):
                                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                b"\x01\x00\x00\x00\x00\x00\x00\x00")
                                sock.close()
                        return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        self._server.close()
