"""The emitted JSON schema describes what the loader accepts: every shipped profile and
every YAML example in README validates against it, and so do the forms the loader reads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from composer.profile import load_profile
from composer.profile.model import Profile
from tests.conftest import REPO, run_cli

SHIPPED = sorted((REPO / "profiles").glob("*.yaml"))


def schema() -> dict[str, Any]:
    return Profile.model_json_schema()


def readme_examples() -> list[dict[str, Any]]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    return [yaml.safe_load(b) for b in blocks if "name:" in b]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_profiles_validate_against_the_schema(path: Path) -> None:
    load_profile(path)  # the loader accepts it …
    jsonschema.validate(yaml.safe_load(path.read_text()), schema())  # … and so does the schema


def test_readme_examples_validate_against_the_schema() -> None:
    examples = readme_examples()
    assert examples, "README has no YAML profile example"
    for example in examples:
        jsonschema.validate(example, schema())


@pytest.mark.parametrize("fields", [
    {"arch": "x86_64"}, {"arch": ["x86_64", "aarch64"]},
    {"overlay": {"tree": "files/"}}, {"overlay": {"tree": ["a/", "b/"]}},
    {"overlay": {"files": [{"path": "/a", "content": "x", "mode": "0644"}]}},
    {"overlay": {"files": [{"path": "/a", "content": "x", "mode": 420}]}},
    {"overlay": {"directories": ["/srv", {"path": "/opt", "mode": "0700"}]}},
    {"repositories": ["main", "@local file:///srv/repo", {"url": "https://x/y", "tag": "t"}]},
    {"extends": "base.yaml"},
])
def test_loader_forms_are_in_the_schema(fields: dict[str, Any]) -> None:
    jsonschema.validate({"name": "x", **fields}, schema())


def test_schema_command_writes_the_same_schema(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    result = run_cli("schema", "-o", out)
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text()) == schema()
