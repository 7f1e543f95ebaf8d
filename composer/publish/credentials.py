"""Registry credentials, found where podman, skopeo and docker keep them; never on argv.

In order, the first source with an entry for the registry wins:

1. ``ALPINE_COMPOSER_REGISTRY_USER`` and ``ALPINE_COMPOSER_REGISTRY_PASSWORD``;
2. ``$REGISTRY_AUTH_FILE``, else ``${XDG_RUNTIME_DIR}/containers/auth.json``;
3. ``${XDG_CONFIG_HOME:-~/.config}/containers/auth.json``;
4. ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``.

In each file, ``credHelpers[<registry>]`` names a ``docker-credential-<name>`` program
(used where it is installed), then ``auths`` entries match the registry or a namespace
of it (``registry.example.org/team``, the most specific first) with a base64
``auth`` of ``user:password``, then ``credsStore`` names a helper for every registry.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from composer.errors import UsageError
from composer.jsonsafe import JsonValue, load_json
from composer.publish.reference import DOCKER_HUB
from composer.publish.wire import RegistryError

ENV_USER = "ALPINE_COMPOSER_REGISTRY_USER"
ENV_PASSWORD = "ALPINE_COMPOSER_REGISTRY_PASSWORD"
MAX_AUTH_FILE = 1 << 20
HELPER_TIMEOUT = 30.0
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Credentials:
    """A user name and secret, and where they came from (for messages; never the secret)."""

    username: str
    password: str
    source: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, source={self.source!r})"


HelperRunner = Callable[[str, str], "Credentials | None"]


def auth_files(env: Mapping[str, str]) -> list[Path]:
    """The auth files to read, in order (absent ones are skipped when read)."""
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    files: list[Path] = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    elif env.get("XDG_RUNTIME_DIR"):
        files.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    config_home = env.get("XDG_CONFIG_HOME") or os.fspath(home / ".config")
    files.append(Path(config_home) / "containers" / "auth.json")
    docker = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else home / ".docker"
    files.append(docker / "config.json")
    return files


def find_credentials(registry: str, repository: str, env: Mapping[str, str], *,
                     helper: HelperRunner | None = None,
                     log: Callable[[str], None] | None = None) -> Credentials | None:
    """The credentials for ``registry`` (``host[:port]`` as in the reference), or None."""
    user, password = env.get(ENV_USER), env.get(ENV_PASSWORD)
    if user or password:
        if not (user and password):
            missing = ENV_PASSWORD if user else ENV_USER
            raise UsageError(f"{missing} is not set: set both {ENV_USER} and {ENV_PASSWORD}, "
                             "or neither")
        return Credentials(user, password, f"${ENV_USER}")
    run = helper or (lambda name, server: run_helper(name, server, log=log))
    for path in auth_files(env):
        found = _from_file(path, registry, repository, run)
        if found is not None:
            return found
    return None


def _from_file(path: Path, registry: str, repository: str,
               run: HelperRunner) -> Credentials | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_AUTH_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RegistryError(f"registry credentials: cannot read {path}: {exc.strerror or exc}") from exc
    doc = load_json(data, what=f"registry credentials {path}", error=UsageError,
                    max_bytes=MAX_AUTH_FILE)
    server = DOCKER_HUB_KEY if registry == DOCKER_HUB else registry
    helpers = doc.optional("credHelpers")
    if helpers is not None:
        for key, name in helpers.members():
            if _normalise(key) in _hosts(registry):
                found = run(_helper_name(name), server)
                if found is not None:
                    return found
    auths = doc.optional("auths")
    if auths is not None:
        for entry in _matching(auths, registry, repository):
            found = _decode_entry(entry, path)
            if found is not None:
                return found
    store = doc.optional("credsStore")
    if store is not None:
        return run(_helper_name(store), server)
    return None


def _normalise(key: str) -> str:
    """An ``auths`` key as ``host[:port][/namespace]``: no scheme, no ``/v1/``, no slash at the end."""
    text = key.strip()
    for prefix in ("https://", "http://"):
        text = text.removeprefix(prefix)
    text = text.rstrip("/")
    for suffix in ("/v1", "/v2"):
        text = text.removesuffix(suffix)
    return text


def _hosts(registry: str) -> set[str]:
    if registry == DOCKER_HUB:
        return {DOCKER_HUB, "index.docker.io", "registry-1.docker.io"}
    return {registry}


def _matching(auths: JsonValue, registry: str, repository: str) -> Iterator[JsonValue]:
    """``auths`` entries for the registry, a namespace entry before the registry's own."""
    hosts = _hosts(registry)
    ranked: list[tuple[int, str, JsonValue]] = []
    for key, entry in auths.members():
        norm = _normalise(key)
        host, _, namespace = norm.partition("/")
        if host not in hosts:
            continue
        if namespace and not (repository == namespace or repository.startswith(namespace + "/")):
            continue
        ranked.append((-len(namespace), key, entry))
    for _, _, entry in sorted(ranked, key=lambda r: (r[0], r[1])):
        yield entry


def _decode_entry(entry: JsonValue, path: Path) -> Credentials | None:
    encoded = entry.optional("auth")
    if encoded is not None:
        text = encoded.str(max_len=16384)
        if text:
            try:
                plain = base64.b64decode(text, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                entry.fail("'auth' is not base64 of user:password")
            user, sep, password = plain.partition(":")
            if not sep or not user:
                entry.fail("'auth' does not decode to user:password")
            return Credentials(user, password, os.fspath(path))
    user_field, password_field = entry.optional("username"), entry.optional("password")
    if user_field is not None and password_field is not None:
        return Credentials(user_field.str(), password_field.str(max_len=16384), os.fspath(path))
    return None


def _helper_name(value: JsonValue) -> str:
    name = value.str(max_len=64)
    if not _HELPER_NAME.fullmatch(name):
        value.fail(f"{name!r} is not a credential helper name")
    return name


def run_helper(name: str, server: str, *,
               log: Callable[[str], None] | None = None) -> Credentials | None:
    """``docker-credential-<name> get`` for ``server``; None when the helper is not installed
    or has nothing for the server."""
    program = shutil.which(f"docker-credential-{name}")
    if program is None:
        if log is not None:
            log(f"warning: credential helper docker-credential-{name} is not installed; skipping it")
        return None
    try:
        done = subprocess.run([program, "get"], input=server.encode(), capture_output=True,
                              timeout=HELPER_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RegistryError(f"credential helper docker-credential-{name}: {exc}") from exc
    if done.returncode != 0:
        text = done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")
        if "not found" in text.lower():
            return None
        first = text.strip().splitlines()[0] if text.strip() else f"exit {done.returncode}"
        raise RegistryError(f"credential helper docker-credential-{name} failed for {server}: "
                            f"{first[:160]}")
    doc = load_json(done.stdout, what=f"docker-credential-{name} output", error=RegistryError,
                    max_bytes=MAX_AUTH_FILE)
    user, secret = doc.field("Username").str(), doc.field("Secret").str(max_len=16384)
    if not secret:
        return None
    return Credentials(user, secret, f"docker-credential-{name}")
