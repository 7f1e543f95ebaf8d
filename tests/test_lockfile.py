"""The lock file format: canonical bytes, a round trip, and hostile lock files refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from composer.errors import VerificationError
from composer.lockfile import (
    LockedArch,
    LockedFile,
    LockedKey,
    LockedMinirootfs,
    LockedPackage,
    LockedRepository,
    LockFile,
    compare_locks,
    lock_path_for,
    parse_lock,
    profile_changes,
    profile_state,
    render_lock,
)

H = "ab" * 32


def sample(version: str = "2.1-r3", release: str = "3.20.3") -> LockFile:
    state = profile_state("web", {"packages": "1" * 64, "overlay": "2" * 64},
                          [("files/app.conf", "3" * 64, 0o644), ("files/run", "4" * 64, 0o755)])
    packages = (
        LockedPackage(name="musl", version="1.2.5-r0", arch="x86_64", checksum="Q1abc=",
                      from_minirootfs=True),
        LockedPackage(name="hello", version=version, arch="x86_64", checksum="Q1def=",
                      repository="v3.20/main", size=1185, sha256=H),
    )
    arch = LockedArch(
        arch="x86_64", release=release,
        minirootfs=LockedMinirootfs(release=release, path="v3.20/releases/x86_64/m.tar.gz",
                                    size=10, sha256=H, sha512="cd" * 64, signed_by="A" * 40,
                                    signature=LockedFile("v3.20/releases/x86_64/m.tar.gz.asc",
                                                         659, H)),
        keys=(LockedKey(name="k.rsa.pub", sha256=H, source="k.rsa.pub"),),
        repositories=(LockedRepository(repository="v3.20/main",
                                       path="v3.20/main/x86_64/APKINDEX.tar.gz", size=784,
                                       sha256=H, signer="k.rsa.pub", key_sha256=H),),
        packages=packages)
    return LockFile(profile=state, branch="v3.20", source_date_epoch=1725622440,
                    epoch_source="inputs", arches=(arch,),
                    release_key=LockedKey(name="ncopa.asc", sha256=H,
                                          source="https://alpinelinux.org/keys/ncopa.asc",
                                          fingerprint="0482D84022F52DF1C4E7CD43293ACD0907D9495A"))


def test_round_trip_and_canonical_bytes() -> None:
    data = render_lock(sample())
    parsed = parse_lock(data, what="web.lock.json")
    assert parsed == sample()
    assert render_lock(parsed) == data
    lines = data.decode().splitlines()
    assert [line.strip()[:30] for line in lines if '"checksum"' in line] == [
        '{"arch": "x86_64", "checksum":', '{"arch": "x86_64", "checksum":']
    assert '"from_minirootfs": true' in data.decode()
    body = json.loads(data)
    assert list(body) == sorted(body)
    assert body["profile"]["files"] == {"files/app.conf": "sha256:" + "3" * 64,
                                        "files/run": "sha256:" + "4" * 64 + " executable"}


def test_lock_path_beside_the_profile() -> None:
    assert lock_path_for(Path("profiles/web.yaml")) == Path("profiles/web.lock.json")
    assert lock_path_for(Path("a/b.c.yml")) == Path("a/b.c.lock.json")


def _resigned(body: dict[str, object]) -> bytes:
    """A hostile lock whose digest was recomputed (what an attacker could do)."""
    plain = {k: v for k, v in body.items() if k != "digest"}
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    body["digest"] = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return json.dumps(body).encode()


@pytest.mark.parametrize(("change", "message"), [
    (lambda b: b["arches"][0]["packages"][1].update(repository="../../etc"),
     "$.arches[0].packages[1].repository: '../../etc' is not a path relative to the mirror"),
    (lambda b: b["arches"][0]["packages"][1].update(sha256="zz"),
     "$.arches[0].packages[1].sha256: expected <64 hex digits>"),
    (lambda b: b["arches"][0]["packages"][1].pop("sha256"),
     "needs 'repository' and 'sha256'"),
    (lambda b: b["arches"][0]["minirootfs"].update(path="/etc/shadow"),
     "is not a path relative to the mirror"),
    (lambda b: b["arches"][0]["packages"][1].update(name="a/b"),
     "$.arches[0].packages[1].name: 'a/b' is not a valid name"),
    (lambda b: b.update(source_date_epoch=2**40), "$.source_date_epoch: 1099511627776 is outside"),
    (lambda b: b.update(lock_version=2), "lock version 2; this alpine-composer reads version 1"),
    (lambda b: b["profile"].update(digest="sha256:" + "0" * 64),
     "$.profile.digest: does not match the digests of its parts"),
    (lambda b: b["arches"][0].update(packages="x"), "$.arches[0].packages: expected an array"),
])
def test_hostile_locks_are_refused(change, message) -> None:  # type: ignore[no-untyped-def]
    body = json.loads(render_lock(sample()))
    change(body)
    with pytest.raises(VerificationError) as err:
        parse_lock(_resigned(body), what="x.lock.json")
    assert message in str(err.value)
    assert str(err.value).startswith("x.lock.json: ")


def test_hand_edits_and_broken_json_are_refused() -> None:
    data = render_lock(sample()).replace(b'"2.1-r3"', b'"2.1-r4"')
    with pytest.raises(VerificationError, match="its content does not match its digest"):
        parse_lock(data, what="x")
    with pytest.raises(VerificationError, match="JSON nested more than 32 levels"):
        parse_lock(b"[" * 100 + b"]" * 100, what="x")
    with pytest.raises(VerificationError, match="not valid JSON"):
        parse_lock(b'{"a": 1, "a": 2}', what="x")


def test_profile_changes_are_named() -> None:
    old = sample().profile
    new = profile_state("web", {"packages": "9" * 64, "overlay": "2" * 64},
                        [("files/app.conf", "3" * 64, 0o644), ("files/new", "5" * 64, 0o644)])
    assert profile_changes(old, new) == ["packages", "overlay file files/new (added)",
                                         "overlay file files/run (removed)"]
    chmod = profile_state("web", dict(old.parts), [("files/app.conf", "3" * 64, 0o644),
                                                   ("files/run", "4" * 64, 0o644)])
    assert profile_changes(old, chmod) == ["overlay file files/run (changed)"]


def test_compare_names_upgrades_and_new_releases() -> None:
    changes = compare_locks(sample(), sample("2.1-r4", "3.20.4"))
    assert changes.lines() == ["upgraded minirootfs 3.20.3 -> 3.20.4 (x86_64)",
                               "upgraded hello 2.1-r3 -> 2.1-r4 (x86_64)"]
    assert changes.summary() == "2 upgraded"
    assert not compare_locks(sample(), sample())
    first = compare_locks(None, sample())
    assert first.lines() == ["added musl-1.2.5-r0 (x86_64)", "added hello-2.1-r3 (x86_64)"]
