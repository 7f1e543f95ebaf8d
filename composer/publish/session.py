"""The one HTTP client of a push: TLS, auth challenges, bounded answers, the fetcher's retries.

Every request names its step (``checking blob sha256:ab12…``) so that a failure is one
line naming the registry, the repository and the step. Credentials are sent only to the
registry's own host, after it asked for them (a ``401`` with a ``Basic`` or ``Bearer``
challenge); bearer tokens are fetched from the realm the challenge names, with the
union of the scopes asked for so far.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from composer.errors import UsageError
from composer.jsonsafe import load_json
from composer.numbers import clip
from composer.publish.credentials import Credentials, HelperRunner, find_credentials
from composer.publish.reference import ImageReference
from composer.publish.wire import Challenge, RegistryError, error_summary, parse_challenge
from composer.sources.fetch import FetchSettings, Retryable, connection_cause, transport_retries

if TYPE_CHECKING:
    import requests

MAX_TOKEN_BODY = 1 << 20
MAX_SMALL_BODY = 4 << 20
DEFAULT_CHUNK = 8 << 20

Body = bytes | Callable[[], Any] | None
"""A request body: bytes, or a factory that opens a fresh reader for each attempt."""


@dataclass(frozen=True)
class RegistrySettings:
    """How to reach registries: TLS, credentials' environment, chunk size, and the fetcher's
    network settings (timeouts, retries, backoff, progress bars, log)."""

    network: FetchSettings = field(default_factory=FetchSettings)
    ca_cert: Path | None = None
    insecure: bool = False
    chunk_size: int = DEFAULT_CHUNK
    env: Mapping[str, str] = field(default_factory=dict)
    helper: HelperRunner | None = None

    def log(self, message: str) -> None:
        if self.network.log is not None:
            self.network.log(message)


class RegistrySession:
    """Requests to one registry host, authenticated as the registry asks."""

    def __init__(self, ref: ImageReference, settings: RegistrySettings) -> None:
        import requests

        if settings.ca_cert is not None and not settings.ca_cert.is_file():
            raise UsageError(f"--ca-cert {settings.ca_cert}: no such file")
        self.settings = settings
        self.registry = ref.registry
        self.repository = ref.repository
        self.host = ref.api_host
        self.base = f"{'http' if settings.insecure else 'https'}://{self.host}"
        self.session = requests.Session()
        # Passed on every request: a session default loses to $REQUESTS_CA_BUNDLE.
        self.verify: str | bool = str(settings.ca_cert) if settings.ca_cert else True
        self.session.headers["User-Agent"] = "alpine-composer"
        # Bodies are counted as they arrive; a compressed one could inflate past the bound
        # inside a single chunk, so none is accepted.
        self.session.headers["Accept-Encoding"] = "identity"
        self._authorization: str | None = None
        self._scopes: dict[str, list[str]] = {}
        self._credentials: Credentials | None = None
        self._looked_up = False
        self._tried: set[str] = set()

    def url(self, path: str) -> str:
        return f"{self.base}/v2/{self.repository}/{path}"

    def where(self, step: str) -> str:
        """``registry/repository: step``, the start of every message about this push."""
        return f"{self.registry}/{self.repository}: {step}"

    # -- one request ---------------------------------------------------------

    def send(self, method: str, url: str, *, where: str, headers: Mapping[str, str] | None = None,
             body: Body = None) -> requests.Response:
        """One attempt (plus one re-send after an auth challenge). Transport failures, 5xx
        and 429 raise :class:`Retryable`; 401/403 after authenticating raise RegistryError;
        every other status is the caller's to judge. The body is streamed: read it with
        :func:`read_bounded` or :func:`small_body`, never ``.content``."""
        response = self._send_once(method, url, headers, body, where)
        if response.status_code == 401:
            challenge = parse_challenge(response.headers.get("WWW-Authenticate"))
            response.close()
            if self._authenticate(challenge, where):
                response = self._send_once(method, url, headers, body, where)
            else:
                raise RegistryError(f"{where}: HTTP 401 unauthorized{self._credential_note()}")
        status = response.status_code
        if status in (401, 403):
            detail = error_summary(small_body(response), response.headers.get("Content-Type"))
            response.close()
            kind = "unauthorized" if status == 401 else "denied"
            raise RegistryError(f"{where}: HTTP {status} {kind}"
                                f"{': ' + detail if detail else ''}{self._credential_note()}")
        if status >= 500 or status == 429:
            response.close()
            raise Retryable(f"HTTP {status}")
        return response

    def _send_once(self, method: str, url: str, headers: Mapping[str, str] | None, body: Body,
                   where: str) -> requests.Response:
        import requests

        all_headers = dict(headers or {})
        if self._authorization and _same_host(url, self.base):
            all_headers["Authorization"] = self._authorization
        data = body() if callable(body) else body
        timeout = (self.settings.network.connect_timeout, self.settings.network.read_timeout)
        try:
            with transport_retries():
                try:
                    return self.session.request(method, url, headers=all_headers, data=data,
                                                stream=True, timeout=timeout, verify=self.verify,
                                                allow_redirects=method in ("GET", "HEAD"))
                except requests.exceptions.SSLError as exc:
                    raise RegistryError(f"{where}: TLS failed ({_ssl_reason(exc)}); give the "
                                        "registry's CA with --ca-cert FILE, or --insecure for a "
                                        "plain-HTTP registry") from exc
        except requests.RequestException as exc:
            raise RegistryError(f"{where}: {clip(str(exc), 160)}") from exc
        finally:
            close = getattr(data, "close", None)
            if callable(close):
                close()

    # -- authentication ------------------------------------------------------

    def credentials(self) -> Credentials | None:
        if not self._looked_up:
            self._credentials = find_credentials(self.registry, self.repository, self.settings.env,
                                                 helper=self.settings.helper,
                                                 log=self.settings.network.log)
            self._looked_up = True
        return self._credentials

    def _credential_note(self) -> str:
        if self._credentials is not None:
            return f" (credentials of user {self._credentials.username!r} from " \
                   f"{self._credentials.source})"
        if self._looked_up:
            return " (no credentials found: set ALPINE_COMPOSER_REGISTRY_USER/_PASSWORD or log in " \
                   "with podman/skopeo/docker)"
        return ""

    def _authenticate(self, challenge: Challenge | None, where: str) -> bool:
        """Answer a 401: True when there is something new to try."""
        creds = self.credentials()
        if challenge is None:
            return False
        if challenge.scheme == "basic":
            if creds is None:
                return False
            header = "Basic " + base64.b64encode(
                f"{creds.username}:{creds.password}".encode()).decode("ascii")
        elif challenge.scheme == "bearer":
            self._add_scopes(challenge.params.get("scope", ""))
            header = "Bearer " + self._token(challenge, creds, where)
        else:
            raise RegistryError(f"{where}: the registry asks for {challenge.scheme!r} "
                                "authentication, which alpine-composer does not speak "
                                "(Basic and Bearer only)")
        if header in self._tried:
            return False
        self._tried.add(header)
        self._authorization = header
        return True

    def _add_scopes(self, text: str) -> None:
        """Merge a challenge's scopes (``repository:team/web:pull``) into those asked for so
        far, one entry per resource; our own repository always gets pull and push, since a
        push needs both (one token instead of two)."""
        own = f"repository:{self.repository}"
        for item in [f"{own}:pull,push", *text.split()]:
            resource, sep, actions = item.rpartition(":")
            if not sep or not resource:
                continue
            merged = self._scopes.get(resource, [])
            merged += [a for a in actions.split(",") if a and a not in merged]
            self._scopes[resource] = merged

    def _scope_list(self) -> list[str]:
        return [f"{resource}:{','.join(actions)}" for resource, actions in self._scopes.items()]

    def _token(self, challenge: Challenge, creds: Credentials | None, where: str) -> str:
        import requests

        realm = challenge.params.get("realm", "")
        parts = urllib.parse.urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RegistryError(f"{where}: bearer challenge without a usable realm "
                                f"({clip(realm)!r})")
        if parts.scheme == "http" and self.base.startswith("https:"):
            raise RegistryError(f"{where}: the token realm {clip(realm)} is plain HTTP while the "
                                "registry is HTTPS; refusing to send credentials there")
        query: list[tuple[str, str]] = []
        if "service" in challenge.params:
            query.append(("service", challenge.params["service"]))
        query.extend(("scope", s) for s in self._scope_list())
        timeout = (self.settings.network.connect_timeout, self.settings.network.read_timeout)
        try:
            if creds is not None and creds.username == "<token>":
                form = dict(query[:1]) | {"grant_type": "refresh_token", "client_id": "alpine-composer",
                                          "refresh_token": creds.password,
                                          "scope": " ".join(self._scope_list())}
                response = self.session.post(realm, data=form, timeout=timeout, verify=self.verify)
            else:
                auth = (creds.username, creds.password) if creds is not None else None
                response = self.session.get(realm, params=query, auth=auth, timeout=timeout,
                                            stream=True, verify=self.verify)
        except requests.exceptions.SSLError as exc:
            raise RegistryError(f"{where}: token server {parts.netloc}: TLS failed "
                                f"({_ssl_reason(exc)})") from exc
        except (requests.Timeout, requests.ConnectionError) as exc:  # named: not the registry
            raise Retryable(f"token server {parts.netloc}: {connection_cause(exc)}") from exc
        with response:
            body = small_body(response, MAX_TOKEN_BODY)
            if response.status_code in (401, 403):
                raise RegistryError(f"{where}: the token server {parts.netloc} refused "
                                    f"(HTTP {response.status_code}){self._credential_note()}")
            if response.status_code >= 500:
                raise Retryable(f"token server {parts.netloc}: HTTP {response.status_code}")
            if response.status_code != 200:
                raise RegistryError(f"{where}: token server {parts.netloc}: HTTP "
                                    f"{response.status_code}")
        doc = load_json(body, what=f"{where}: token from {parts.netloc}", error=RegistryError,
                        max_bytes=MAX_TOKEN_BODY)
        for key in ("token", "access_token"):
            value = doc.optional(key)
            if value is not None and value.str(max_len=64 * 1024):
                token = value.str(max_len=64 * 1024)
                if any(ord(c) < 0x21 or ord(c) > 0x7E for c in token):
                    doc.fail(f"{key} has characters a header cannot carry")
                return token
        doc.fail("no 'token' or 'access_token'")


def read_bounded(response: requests.Response, limit: int, *, where: str) -> bytes:
    """A response body of at most ``limit`` bytes (a larger one is a RegistryError)."""

    chunks: list[bytes] = []
    total = 0
    with transport_retries():
        for chunk in response.iter_content(64 * 1024):
            total += len(chunk)
            if total > limit:
                raise RegistryError(f"{where}: answer larger than {limit} bytes")
            chunks.append(chunk)
    return b"".join(chunks)


def small_body(response: requests.Response, limit: int = 64 * 1024) -> bytes:
    """An error or status body, bounded; empty when larger or cut off."""
    try:
        return read_bounded(response, limit, where="")
    except (RegistryError, Retryable):
        return b""


def _same_host(url: str, base: str) -> bool:
    a, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(base)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)


def _ssl_reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("CERTIFICATE_VERIFY_FAILED", "WRONG_VERSION_NUMBER", "hostname mismatch"):
        if marker in text:
            return {"CERTIFICATE_VERIFY_FAILED": "certificate verify failed",
                    "WRONG_VERSION_NUMBER": "the server does not speak TLS",
                    "hostname mismatch": "certificate is for another host"}[marker]
    return clip(text.splitlines()[0] if text else type(exc).__name__, 120)
