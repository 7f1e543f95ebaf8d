"""Where credentials come from, in the container tools' order; helpers are real programs on PATH."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from composer.errors import UsageError
from composer.publish.credentials import find_credentials, run_helper
from composer.publish.wire import RegistryError


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write(path: Path, doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment whose HOME is empty: no file of the real user is read."""
    (tmp_path / "home").mkdir()
    return {"HOME": str(tmp_path / "home"), "PATH": os.environ.get("PATH", "")}


def test_environment_first_then_files_in_order(tmp_path: Path, home: dict[str, str]) -> None:
    runtime = write(tmp_path / "run" / "containers" / "auth.json",
                    {"auths": {"reg.io": {"auth": b64("runtime:1")}}})
    config = write(tmp_path / "home" / ".config" / "containers" / "auth.json",
                   {"auths": {"reg.io": {"auth": b64("config:2")}}})
    docker = write(tmp_path / "home" / ".docker" / "config.json",
                   {"auths": {"https://reg.io/v1/": {"auth": b64("docker:3")},
                              "other.io": {"auth": b64("other:4")}}})
    env = {**home, "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    found = find_credentials("reg.io", "team/web", env)
    assert found is not None and (found.username, found.password, found.source) == ("runtime", "1", str(runtime))
    runtime.unlink()
    found = find_credentials("reg.io", "team/web", env)
    assert found is not None and (found.username, found.source) == ("config", str(config))
    config.unlink()
    found = find_credentials("reg.io", "team/web", env)
    assert found is not None and (found.username, found.password, found.source) == ("docker", "3", str(docker))
    assert find_credentials("nowhere.io", "x", env) is None
    both = {**env, "ALPINE_COMPOSER_REGISTRY_USER": "u", "ALPINE_COMPOSER_REGISTRY_PASSWORD": "p"}
    found = find_credentials("reg.io", "team/web", both)
    assert found is not None and (found.username, found.password) == ("u", "p")
    assert "p" not in repr(found)
    with pytest.raises(UsageError, match="ALPINE_COMPOSER_REGISTRY_PASSWORD is not set"):
        find_credentials("reg.io", "x", {**env, "ALPINE_COMPOSER_REGISTRY_USER": "u"})


def test_registry_auth_file_and_docker_config_variables(tmp_path: Path, home: dict[str, str]) -> None:
    auth = write(tmp_path / "elsewhere.json", {"auths": {"reg.io": {"auth": b64("a:b")}}})
    found = find_credentials("reg.io", "x", {**home, "REGISTRY_AUTH_FILE": str(auth),
                                             "XDG_RUNTIME_DIR": str(tmp_path / "unused")})
    assert found is not None and found.source == str(auth)
    docker = write(tmp_path / "dc" / "config.json", {"auths": {"reg.io": {"username": "n", "password": "w"}}})
    found = find_credentials("reg.io", "x", {**home, "DOCKER_CONFIG": str(tmp_path / "dc")})
    assert found is not None and (found.username, found.password, found.source) == ("n", "w", str(docker))


def test_namespace_entries_win_over_the_registry_entry(tmp_path: Path, home: dict[str, str]) -> None:
    auth = write(tmp_path / "a.json", {"auths": {"reg.io": {"auth": b64("all:1")},
                                                 "reg.io/team": {"auth": b64("team:2")},
                                                 "reg.io/team/web": {"auth": b64("web:3")}}})
    env = {**home, "REGISTRY_AUTH_FILE": str(auth)}
    users = {repo: find_credentials("reg.io", repo, env).username  # type: ignore[union-attr]
             for repo in ("team/web", "team/api", "teams/x", "other")}
    assert users == {"team/web": "web", "team/api": "team", "teams/x": "all", "other": "all"}


def test_docker_hub_is_filed_under_index_docker_io(tmp_path: Path, home: dict[str, str]) -> None:
    write(tmp_path / "home" / ".docker" / "config.json",
          {"auths": {"https://index.docker.io/v1/": {"auth": b64("hub:pw")}}})
    found = find_credentials("docker.io", "library/alpine", home)
    assert found is not None and found.username == "hub"


def fake_helper(folder: Path, name: str, script: str) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / f"docker-credential-{name}"
    program.write_text("#!/bin/sh\n" + script)
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{folder}:{os.environ.get('PATH', '')}"}


def test_credential_helpers(tmp_path: Path, home: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    path = fake_helper(tmp_path / "bin", "test", """
read server
[ "$1" = get ] || exit 2
case "$server" in
  reg.io) echo '{"ServerURL":"reg.io","Username":"helped","Secret":"hs"}' ;;
  https://index.docker.io/v1/) echo '{"ServerURL":"x","Username":"hub","Secret":"hubs"}' ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
""")
    monkeypatch.setenv("PATH", path["PATH"])
    write(tmp_path / "home" / ".docker" / "config.json",
          {"credHelpers": {"reg.io": "test"}, "credsStore": "test",
           "auths": {"reg.io": {"auth": b64("file:f")}}})
    found = find_credentials("reg.io", "x", home)
    assert found is not None and (found.username, found.password, found.source) == \
        ("helped", "hs", "docker-credential-test")
    found = find_credentials("docker.io", "library/alpine", home)
    assert found is not None and found.username == "hub"
    assert find_credentials("unknown.io", "x", home) is None
    logs: list[str] = []
    assert run_helper("missing", "reg.io", log=logs.append) is None
    assert logs == ["warning: credential helper docker-credential-missing is not installed; skipping it"]
    fake_helper(tmp_path / "bin", "broken", "echo 'keychain locked' >&2; exit 3\n")
    with pytest.raises(RegistryError, match="docker-credential-broken failed for reg.io: keychain locked"):
        run_helper("broken", "reg.io")
    fake_helper(tmp_path / "bin", "garbage", "echo '[1,'\n")
    with pytest.raises(RegistryError, match="docker-credential-garbage output: not valid JSON"):
        run_helper("garbage", "reg.io")


@pytest.mark.parametrize(("doc", "message"), [
    ({"auths": {"reg.io": {"auth": "!!!"}}}, r"\$\.auths\.reg\.io: 'auth' is not base64"),
    ({"auths": {"reg.io": {"auth": b64("nocolon")}}}, r"\$\.auths\.reg\.io: 'auth' does not decode to user:password"),
    ({"credHelpers": {"reg.io": "../../bin/sh"}}, r"\$\.credHelpers\.reg\.io: '\.\./\.\./bin/sh' is not a credential helper name"),
    ({"auths": []}, r"\$\.auths: expected an object"),
])
def test_bad_auth_files_are_named(tmp_path: Path, home: dict[str, str], doc: object, message: str) -> None:
    auth = write(tmp_path / "a.json", doc)
    with pytest.raises(UsageError, match=f"registry credentials {auth}: " + message):
        find_credentials("reg.io", "x", {**home, "REGISTRY_AUTH_FILE": str(auth)})
