"""The resolver on small synthetic repositories and on the real Alpine indexes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from composer.apk.depends import Dependency, parse_dependencies
from composer.apk.index import PackageInfo
from composer.apk.resolver import RepositoryIndex, Resolution, resolve
from composer.apk.version import compare_versions
from composer.errors import ResolveError
from tests.apk import real_indexes


def pkg(name: str, version: str = "1.0-r0", depends: str = "", provides: str = "",
        install_if: str = "", k: int | None = None, arch: str = "x86_64") -> PackageInfo:
    def deps(text: str) -> tuple[Dependency, ...]:
        return parse_dependencies(text, source="test")
    return PackageInfo(name=name, version=version, checksum=f"Q1{name}-{version}=", arch=arch,
                       depends=deps(depends), provides=deps(provides),
                       install_if=deps(install_if), provider_priority=k)


def repo(*packages: PackageInfo, name: str = "main", tag: str | None = None) -> RepositoryIndex:
    return RepositoryIndex(name, tag, packages)


def run(world: str, *repos: RepositoryIndex, installed: tuple[PackageInfo, ...] = (),
        upgrade: bool = False) -> Resolution:
    return resolve(parse_dependencies(world, source="world"), repos, installed=installed,
                   arch="x86_64", upgrade=upgrade)


def labels(resolution: Resolution) -> list[str]:
    return [p.label for p in resolution.packages]


def error(world: str, *repos: RepositoryIndex) -> str:
    with pytest.raises(ResolveError) as info:
        run(world, *repos)
    return str(info.value)


def test_dependencies_come_before_dependents() -> None:
    r = run("app", repo(pkg("app", depends="libfoo so:libc.musl-x86_64.so.1"),
                        pkg("libfoo", depends="so:libc.musl-x86_64.so.1"),
                        pkg("musl", provides="so:libc.musl-x86_64.so.1=1"),
                        pkg("unrelated")))
    assert labels(r) == ["musl-1.0-r0", "libfoo-1.0-r0", "app-1.0-r0"]
    assert r.reasons == {
        "app": "required by world (app)",
        "libfoo": "required by app-1.0-r0 (libfoo)",
        "musl": "required by app-1.0-r0 (so:libc.musl-x86_64.so.1)",
    }


@pytest.mark.parametrize(
    ("atom", "chosen"),
    [
        ("foo", "foo-2.0-r0"),
        ("foo=1.5-r0", "foo-1.5-r0"),
        ("foo<2", "foo-1.5-r0"),
        ("foo<=1.5-r0", "foo-1.5-r0"),
        ("foo<1.5", "foo-1.0-r0"),
        ("foo>1.0-r0", "foo-2.0-r0"),
        ("foo>=1.0", "foo-2.0-r0"),
        ("foo~1", "foo-1.5-r0"),
        ("foo~1.0", "foo-1.0-r0"),
    ],
)
def test_version_constraints(atom: str, chosen: str) -> None:
    main = repo(pkg("foo", "1.0-r0"), pkg("foo", "1.5-r0"), pkg("foo", "2.0-r0"))
    assert labels(run(atom, main)) == [chosen]


def test_constraints_from_several_requirers_combine() -> None:
    main = repo(pkg("foo", "1.0-r0"), pkg("foo", "1.5-r0"), pkg("foo", "2.0-r0"),
                pkg("a", depends="foo>=1.2"), pkg("b", depends="foo<2"))
    assert labels(run("a b", main)) == ["foo-1.5-r0", "a-1.0-r0", "b-1.0-r0"]


def test_backtracks_when_the_newest_candidate_leads_to_a_conflict() -> None:
    main = repo(pkg("app", "2.0-r0", depends="lib=2.0-r0"), pkg("app", "1.0-r0", depends="lib=1.0-r0"),
                pkg("lib", "2.0-r0"), pkg("lib", "1.0-r0"), pkg("old", depends="lib<2"))
    assert labels(run("old app", main)) == ["lib-1.0-r0", "app-1.0-r0", "old-1.0-r0"]


def test_versioned_provides_pick_the_highest_provided_version() -> None:
    main = repo(pkg("libz-old", "5.0-r0", provides="so:libz.so.1=1.2"),
                pkg("zlib", "1.3-r0", provides="so:libz.so.1=1.3"),
                pkg("app", depends="so:libz.so.1"))
    assert labels(run("app", main)) == ["zlib-1.3-r0", "app-1.0-r0"]


def test_two_packages_cannot_own_the_same_versioned_provide() -> None:
    main = repo(pkg("a", provides="so:libx.so.1=1"), pkg("b", provides="so:libx.so.1=2"))
    assert error("a b", main) == (
        "cannot satisfy b (required by world); b-1.0-r0 and selected a-1.0-r0 both provide so:libx.so.1"
    )


def test_unversioned_provider_needs_priority_or_explicit_request() -> None:
    plain = repo(pkg("mksh", provides="/bin/sh"), pkg("app", depends="/bin/sh"))
    assert error("app", plain) == (
        "cannot satisfy /bin/sh (required by app-1.0-r0); mksh-1.0-r0 provides /bin/sh without a version "
        "and has no provider_priority; add mksh to the world to choose it"
    )
    assert labels(run("app mksh", plain)) == ["mksh-1.0-r0", "app-1.0-r0"]


def test_provider_priority_decides_between_virtual_providers() -> None:
    main = repo(pkg("dash-binsh", "0.5-r0", provides="/bin/sh", k=60),
                pkg("busybox-binsh", "1.36-r0", provides="/bin/sh", k=100),
                pkg("zsh-binsh", "9.0-r0", provides="/bin/sh", k=50),
                pkg("base", depends="/bin/sh"))
    assert labels(run("base", main)) == ["busybox-binsh-1.36-r0", "base-1.0-r0"]
    # An explicit request wins over priority, and satisfies the virtual name.
    assert labels(run("base dash-binsh", main)) == ["dash-binsh-0.5-r0", "base-1.0-r0"]


def test_several_unversioned_providers_may_coexist() -> None:
    main = repo(pkg("a", provides="virt"), pkg("b", provides="virt"))
    assert labels(run("a b", main)) == ["a-1.0-r0", "b-1.0-r0"]


def test_install_if_adds_packages_when_all_conditions_hold() -> None:
    main = repo(pkg("busybox", "1.36-r0"), pkg("libssl3"),
                pkg("ssl_client", install_if="busybox=1.36-r0 libssl3", depends="libssl3"),
                pkg("busybox-doc", install_if="docs busybox"),
                pkg("other", install_if="busybox=1.0-r0 libssl3"))
    assert labels(run("busybox", main)) == ["busybox-1.36-r0"]
    r = run("busybox libssl3", main)
    assert labels(r) == ["busybox-1.36-r0", "libssl3-1.0-r0", "ssl_client-1.0-r0"]
    assert r.reasons["ssl_client"] == "installed by install_if (busybox=1.36-r0 libssl3)"


def test_install_if_chains_and_skips_packages_that_cannot_be_installed() -> None:
    main = repo(pkg("a"), pkg("b", install_if="a"), pkg("c", install_if="b"),
                pkg("d", install_if="a", depends="missing"))
    assert labels(run("a", main)) == ["a-1.0-r0", "b-1.0-r0", "c-1.0-r0"]


def test_conflicts_in_world_and_in_dependencies() -> None:
    main = repo(pkg("a", depends="!b"), pkg("b"), pkg("c", depends="b"))
    assert error("a c", main) == (
        "cannot satisfy b (required by c-1.0-r0); b-1.0-r0 is excluded by a-1.0-r0 (!b)"
    )
    assert error("b !b", main) == "cannot satisfy b (required by world); b-1.0-r0 is excluded by world (!b)"
    assert labels(run("c !a", main)) == ["b-1.0-r0", "c-1.0-r0"]


def test_versioned_conflict_only_excludes_matching_versions() -> None:
    main = repo(pkg("lib", "1.0-r0"), pkg("lib", "2.0-r0"), pkg("lib", "3.0-r0"),
                pkg("app", depends="lib !lib>=3"))
    assert labels(run("app", main)) == ["lib-2.0-r0", "app-1.0-r0"]


def test_dependency_cycles_terminate_with_a_stable_order() -> None:
    main = repo(pkg("a", depends="b"), pkg("b", depends="c"), pkg("c", depends="a"))
    assert labels(run("a", main)) == ["c-1.0-r0", "b-1.0-r0", "a-1.0-r0"]
    assert labels(run("b", main)) == ["a-1.0-r0", "c-1.0-r0", "b-1.0-r0"]
    assert labels(run("c a", main)) == ["c-1.0-r0", "b-1.0-r0", "a-1.0-r0"]


def test_tagged_repositories_need_the_tag() -> None:
    main = repo(pkg("foo", "1.0-r0"), pkg("bar", depends="libbar"), pkg("libbar", "1.0-r0"))
    edge = repo(pkg("foo", "2.0-r0"), pkg("new", depends="libbar>=2"), pkg("libbar", "2.0-r0"),
                name="edge", tag="edge")
    assert labels(run("foo", main, edge)) == ["foo-1.0-r0"]
    assert labels(run("foo@edge", main, edge)) == ["foo-2.0-r0"]
    # Dependencies of a pinned package may come from the tagged repository too.
    assert labels(run("new@edge", main, edge)) == ["libbar-2.0-r0", "new-1.0-r0"]
    assert error("new", main, edge) == (
        "cannot satisfy new (required by world); new-1.0-r0 is only in repositories tagged @edge; "
        "ask for new@<tag> to allow it"
    )
    assert error("foo@nosuch", main, edge) == "no repository is tagged @nosuch (required by world: foo@nosuch)"


def test_untagged_packages_are_preferred_for_unpinned_dependencies() -> None:
    main = repo(pkg("lib", "1.0-r0"))
    edge = repo(pkg("lib", "2.0-r0"), pkg("app", depends="lib"), name="edge", tag="edge")
    assert labels(run("app@edge", main, edge)) == ["lib-1.0-r0", "app-1.0-r0"]


def test_installed_versions_are_kept_unless_upgrading() -> None:
    main = repo(pkg("foo", "1.0-r0"), pkg("foo", "2.0-r0"), pkg("bar", depends="foo"))
    installed = (pkg("foo", "1.0-r0"),)
    assert labels(run("bar", main, installed=installed)) == ["foo-1.0-r0", "bar-1.0-r0"]
    assert labels(run("bar", main, installed=installed, upgrade=True)) == ["foo-2.0-r0", "bar-1.0-r0"]
    assert labels(run("bar foo>=2", main, installed=installed)) == ["foo-2.0-r0", "bar-1.0-r0"]
    # An installed package that no repository has any more is still usable.
    gone = (pkg("legacy", "0.1-r0"),)
    assert labels(run("legacy", main, installed=gone)) == ["legacy-0.1-r0"]


def test_repository_order_breaks_ties() -> None:
    first = repo(pkg("a", provides="virt", k=10), name="first")
    second = repo(pkg("b", provides="virt", k=10), name="second")
    assert labels(run("virt", first, second)) == ["a-1.0-r0"]
    assert labels(run("virt", second, first)) == ["b-1.0-r0"]
    same_first = repo(pkg("x", "1.0-r0"), name="one")
    same_second = repo(pkg("x", "1.0-r0"), name="two")
    chosen = run("x", same_first, same_second).packages[0]
    assert chosen.label == "x-1.0-r0"


def test_other_architectures_are_ignored() -> None:
    main = repo(pkg("tool", arch="aarch64"), pkg("doc", arch="noarch"))
    assert error("tool", main) == (
        "no package provides 'tool' for this architecture (required by world); only tool-1.0-r0 (aarch64)"
    )
    assert labels(run("doc", main)) == ["doc-1.0-r0"]


def test_unsatisfiable_world_messages() -> None:
    main = repo(pkg("py3-foo", "1.2-r0", depends="so:libbar.so.3"),
                pkg("libbar", "2-r0", provides="so:libbar.so.2=2"),
                pkg("app", depends="py3-foo"),
                pkg("pinned", depends="libbar>=3"))
    assert error("nosuch", main) == "no package provides 'nosuch' (required by world)"
    assert error("py3-foo", main) == (
        "cannot satisfy py3-foo (required by world); py3-foo-1.2-r0 needs so:libbar.so.3, which nothing provides"
    )
    assert error("app", main) == (
        "cannot satisfy app (required by world); app-1.0-r0 needs py3-foo: "
        "py3-foo-1.2-r0 needs so:libbar.so.3, which nothing provides"
    )
    assert error("pinned", main) == (
        "cannot satisfy pinned (required by world); pinned-1.0-r0 needs libbar>=3, but only libbar-2-r0 provide libbar"
    )
    assert error("libbar>=3", main) == (
        "cannot satisfy libbar>=3 (required by world); libbar-2-r0 does not satisfy libbar>=3 (required by world)"
    )


def test_failed_alternatives_are_all_named() -> None:
    main = repo(pkg("app", "2-r0", depends="lib=2 x"), pkg("app", "1-r0", depends="lib=1 y"),
                pkg("lib", "2"), pkg("lib", "1"), pkg("x", depends="!z"), pkg("y", depends="!z"),
                pkg("z"), pkg("pin", depends="lib=3"))
    assert error("app z", main) == (
        "cannot satisfy app (required by world); "
        "choosing app-2-r0: cannot satisfy x (required by app-2-r0) "
        "(x-1.0-r0 conflicts with selected z-1.0-r0 (!z)); "
        "choosing app-1-r0: cannot satisfy y (required by app-1-r0) "
        "(y-1.0-r0 conflicts with selected z-1.0-r0 (!z))"
    )
    assert error("pin", main) == (
        "cannot satisfy pin (required by world); pin-1.0-r0 needs lib=3, but only lib-1, lib-2 provide lib"
    )
    assert error("app lib=3", main) == (
        "cannot satisfy lib=3 (required by world); lib-2 does not satisfy lib=3 (required by world); "
        "lib-1 does not satisfy lib=3 (required by world)"
    )


def test_a_conflicting_preferred_provider_is_passed_over() -> None:
    main = repo(pkg("w", depends="libv"), pkg("l1", provides="libv", k=1),
                pkg("l2", provides="libv", k=2, depends="!w"))
    assert labels(run("w", main)) == ["l1-1.0-r0", "w-1.0-r0"]
    assert labels(run("libv", main)) == ["l2-1.0-r0"]


# -- properties ---------------------------------------------------------------


@st.composite
def acyclic_repos(draw: st.DrawFn) -> tuple[list[PackageInfo], list[Dependency]]:
    """Packages p0..pN with several versions; a package only depends on lower-numbered names."""
    count = draw(st.integers(min_value=1, max_value=7))
    packages: list[PackageInfo] = []
    for i in range(count):
        versions = draw(st.lists(st.sampled_from(["1.0-r0", "1.1-r0", "2.0-r0", "2.0-r1"]),
                                 min_size=1, max_size=3, unique=True))
        for version in versions:
            deps: list[str] = []
            for j in range(i):
                kind = draw(st.sampled_from(["none", "none", "any", "ge", "lt", "virt"]))
                if kind == "any":
                    deps.append(f"p{j}")
                elif kind == "ge":
                    deps.append(f"p{j}>=1.1")
                elif kind == "lt":
                    deps.append(f"p{j}<2")
                elif kind == "virt":
                    deps.append(f"so:lib{j}.so")
            provides = f"so:lib{i}.so={version.split('-')[0]}"
            iif = f"p{i - 1}" if i and draw(st.integers(0, 4)) == 0 else ""
            packages.append(pkg(f"p{i}", version, " ".join(deps), provides, iif))
    world = [Dependency(f"p{draw(st.integers(0, count - 1))}")]
    return packages, world


def _check_consistent(r: Resolution, world: list[Dependency], *, acyclic: bool = True) -> None:
    chosen = {p.name: p for p in r.packages}
    assert len(chosen) == len(r.packages)

    def provided(dep: Dependency) -> bool:
        versions = [p.version for p in r.packages if p.name == dep.name]
        versions += [v.version if v.op else None for p in r.packages for v in p.provides if v.name == dep.name]
        if dep.conflict:
            return all(dep.satisfied_by(v) for v in versions)
        return any(dep.satisfied_by(v) for v in versions)

    for dep in world:
        assert provided(dep)
    position = {p.name: i for i, p in enumerate(r.packages)}
    for p in r.packages:
        for dep in p.depends:
            assert provided(dep), (p.label, dep.format())
        for dep in p.depends:
            if acyclic and dep.name in position:
                assert position[dep.name] < position[p.name]  # acyclic: deps first
        if r.reasons[p.name].startswith("installed by install_if"):
            assert all(provided(d) for d in p.install_if)


@settings(max_examples=150, deadline=None)
@given(acyclic_repos(), st.randoms(use_true_random=False))
def test_resolution_is_consistent_and_independent_of_package_order(
    data: tuple[list[PackageInfo], list[Dependency]], rnd: object
) -> None:
    packages, world = data
    try:
        reference = resolve(world, [repo(*packages)], arch="x86_64")
    except ResolveError as exc:
        shuffled = list(packages)
        rnd.shuffle(shuffled)  # type: ignore[attr-defined]
        with pytest.raises(ResolveError) as again:
            resolve(world, [repo(*shuffled)], arch="x86_64")
        assert str(again.value) == str(exc)
        return
    _check_consistent(reference, world)
    for _ in range(3):
        shuffled = list(packages)
        rnd.shuffle(shuffled)  # type: ignore[attr-defined]
        assert resolve(world, [repo(*shuffled)], arch="x86_64") == reference


@settings(max_examples=100, deadline=None)
@given(acyclic_repos())
def test_without_constraints_the_newest_version_of_each_world_name_wins(
    data: tuple[list[PackageInfo], list[Dependency]]
) -> None:
    packages, world = data
    try:
        r = resolve(world, [repo(*packages)], arch="x86_64")
    except ResolveError:
        return
    chosen = next(p for p in r.packages if p.name == world[0].name)
    newer = [p for p in packages if p.name == chosen.name and compare_versions(p.version, chosen.version) > 0]
    # A newer version may only lose because it could not be installed with the rest.
    for candidate in newer:
        with pytest.raises(ResolveError):
            resolve([Dependency(candidate.name, "=", candidate.version)], [repo(*packages)], arch="x86_64")


# -- real Alpine data -----------------------------------------------------------


def test_real_iso_base_world_gives_apks_fifteen_packages() -> None:
    iso = real_indexes.load(real_indexes.ISO_3191)
    r = resolve(parse_dependencies("alpine-baselayout alpine-keys apk-tools busybox libc-utils", source="world"),
                [RepositoryIndex("iso", None, iso.packages)], arch="x86_64")
    assert labels(r) == [
        "alpine-baselayout-data-3.4.3-r2", "musl-1.2.4_git20230717-r4", "busybox-1.36.1-r15",
        "busybox-binsh-1.36.1-r15", "alpine-baselayout-3.4.3-r2", "alpine-keys-2.4-r1",
        "ca-certificates-bundle-20230506-r0", "libcrypto3-3.1.4-r5", "libssl3-3.1.4-r5",
        "ssl_client-1.36.1-r15", "zlib-1.3.1-r0", "apk-tools-2.14.0-r5", "scanelf-1.3.7-r2",
        "musl-utils-1.2.4_git20230717-r4", "libc-utils-0.7.2-r5",
    ]
    by_name = {p.name: p for p in r.packages}
    assert by_name["apk-tools"].checksum == "Q1Xe3uPoEqpMGDw0SM8/BaTSfh1OU="
    assert r.reasons["busybox-binsh"] == "required by alpine-baselayout-3.4.3-r2 (/bin/sh)"
    assert r.reasons["ssl_client"] == "installed by install_if (busybox=1.36.1-r15 libssl3)"


def test_real_iso_alpine_base_adds_release_and_openrc() -> None:
    iso = real_indexes.load(real_indexes.ISO_3191)
    r = resolve([Dependency("alpine-base")], [RepositoryIndex("iso", None, iso.packages)], arch="x86_64")
    names = {p.name for p in r.packages}
    assert {"alpine-base", "alpine-release", "openrc", "alpine-conf", "busybox-suid", "ssl_client"} <= names
    assert r.packages[-1].name == "alpine-base"


@pytest.mark.parametrize(
    ("world", "must_have"),
    [
        ("alpine-base", {"alpine-base", "busybox", "musl", "openrc", "apk-tools", "ssl_client"}),
        ("python3", {"python3", "libffi", "sqlite-libs", "musl"}),
        ("openssh", {"openssh", "openssh-server", "openssh-client-default", "openssh-sftp-server"}),
    ],
)
def test_real_v319_main_worlds(world: str, must_have: set[str]) -> None:
    main = real_indexes.load(real_indexes.V319_MAIN)
    r = resolve(parse_dependencies(world, source="world"), [RepositoryIndex("main", None, main.packages)],
                arch="x86_64")
    names = [p.name for p in r.packages]
    assert len(names) == len(set(names))
    assert must_have <= set(names)
    _check_consistent(r, list(parse_dependencies(world, source="world")), acyclic=False)


def test_real_index_for_the_wrong_arch_provides_nothing() -> None:
    main = real_indexes.load(real_indexes.V319_MAIN)
    with pytest.raises(ResolveError) as info:
        resolve([Dependency("busybox")], [RepositoryIndex("main", None, main.packages)], arch="aarch64")
    assert str(info.value).startswith(
        "no package provides 'busybox' for this architecture (required by world); only busybox-"
    )
