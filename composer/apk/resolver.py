"""Choose the set of packages that satisfies a world, the way apk would.

Pure: takes parsed indexes and returns a Resolution.  The search picks, for
each dependency, candidates in apk's order of preference (apk-tools
``compare_providers``) and backtracks when a choice leads to a conflict.
Names with a single viable candidate are settled first, so ordinary Alpine
worlds resolve without any backtracking and give apk's answer.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from composer.apk.depends import Dependency, format_dependencies
from composer.apk.index import PackageInfo
from composer.apk.version import compare_versions
from composer.errors import ResolveError

__all__ = ["RepositoryIndex", "Resolution", "resolve"]

_MAX_STEPS = 200_000
_MAX_CAUSES = 6
_WORLD = "world"


class RepositoryIndex(NamedTuple):
    """One repository: its name (or URL), its ``@tag`` (None = always eligible), its packages.

    Repositories are passed in priority order (first = preferred on ties).
    """

    name: str
    tag: str | None
    packages: Sequence[PackageInfo]


@dataclass(frozen=True)
class Resolution:
    """The packages to have installed, dependencies before dependents, and why each is there."""

    packages: tuple[PackageInfo, ...]
    reasons: Mapping[str, str]


@dataclass(eq=False)
class _Cand:
    """A distinct package (merged across repositories that carry the same file)."""

    pkg: PackageInfo
    repos: list[int]
    tags: set[str | None]
    installed: bool
    rank: int = 0
    broken: str | None = None

    @property
    def name(self) -> str:
        return self.pkg.name

    @property
    def label(self) -> str:
        return self.pkg.label

    def provided_version(self, name: str) -> str | None:
        if name == self.pkg.name:
            return self.pkg.version
        for p in self.pkg.provides:
            if p.name == name:
                return p.version if p.op else None
        return None

    def provided_names(self) -> Iterable[tuple[str, str | None]]:
        yield self.pkg.name, self.pkg.version
        for p in self.pkg.provides:
            yield p.name, (p.version if p.op else None)


@dataclass(frozen=True)
class _Need:
    """A dependency still to satisfy, with who asked for it and where it may come from."""

    dep: Dependency
    requirer: str              # "world", "install_if" or a package label
    allowed: frozenset[str]    # repository tags the requirer chain may use
    preferred: str | None      # tag whose repositories are preferred
    cand: _Cand | None = None  # set for install_if additions: this exact package

    def reason(self) -> str:
        if self.requirer == "install_if" and self.cand is not None:
            return f"installed by install_if ({format_dependencies(self.cand.pkg.install_if)})"
        return f"required by {self.requirer} ({self.dep.format()})"


class _Fail(Exception):
    def __init__(self, summary: str, causes: Sequence[str] = ()) -> None:
        super().__init__(summary)
        self.summary = summary
        self.causes = list(dict.fromkeys(causes))

    def message(self) -> str:
        causes = self.causes[:_MAX_CAUSES]
        if len(self.causes) > _MAX_CAUSES:
            causes.append(f"and {len(self.causes) - _MAX_CAUSES} more")
        return "; ".join([self.summary, *causes])


@dataclass
class _State:
    """One branch of the search: the packages chosen so far and what they constrain."""

    selected: dict[str, _Cand] = field(default_factory=dict)
    providers: dict[str, tuple[tuple[_Cand, str | None], ...]] = field(default_factory=dict)
    constraints: dict[str, tuple[tuple[Dependency, str], ...]] = field(default_factory=dict)
    conflicts: tuple[tuple[Dependency, str], ...] = ()
    allowed: dict[str, frozenset[str]] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    pending: deque[_Need] = field(default_factory=deque)
    iif_rejected: set[int] = field(default_factory=set)

    def copy(self) -> _State:
        return _State(dict(self.selected), dict(self.providers), dict(self.constraints),
                      self.conflicts, dict(self.allowed), dict(self.reasons),
                      deque(self.pending), set(self.iif_rejected))


def resolve(
    world: Sequence[Dependency],
    repositories: Sequence[RepositoryIndex],
    *,
    installed: Sequence[PackageInfo] = (),
    arch: str,
    upgrade: bool = False,
) -> Resolution:
    """Resolve ``world`` against ``repositories`` for ``arch``.

    ``installed`` packages are kept when they still satisfy every constraint
    unless ``upgrade`` is True.  Raises ResolveError naming each rejected
    candidate and why when the world cannot be satisfied.
    """
    return _Resolver(world, repositories, installed, arch, upgrade).run()


class _Resolver:
    def __init__(self, world: Sequence[Dependency], repositories: Sequence[RepositoryIndex],
                 installed: Sequence[PackageInfo], arch: str, upgrade: bool) -> None:
        self.world = list(world)
        self.repositories = list(repositories)
        self.upgrade = upgrade
        self.steps = 0
        self.providers: dict[str, list[tuple[_Cand, str | None]]] = {}
        self.other_arch: dict[str, list[str]] = {}
        self.iif_by_name: dict[str, list[_Cand]] = {}
        self._build(installed, arch)

    # -- candidates -------------------------------------------------------

    def _build(self, installed: Sequence[PackageInfo], arch: str) -> None:
        by_key: dict[tuple[str, str, str | None], _Cand] = {}
        for index, repo in enumerate(self.repositories):
            for pkg in repo.packages:
                if pkg.arch not in (None, "", "noarch", arch):
                    self.other_arch.setdefault(pkg.name, []).append(f"{pkg.label} ({pkg.arch})")
                    continue
                key = (pkg.name, pkg.version, pkg.checksum)
                cand = by_key.get(key)
                if cand is None:
                    by_key[key] = _Cand(pkg, [index], {repo.tag}, False)
                elif index not in cand.repos:
                    cand.repos.append(index)
                    cand.tags.add(repo.tag)
        for pkg in installed:
            match = by_key.get((pkg.name, pkg.version, pkg.checksum))
            if match is None and pkg.checksum is None:
                match = next((c for k, c in by_key.items() if k[:2] == (pkg.name, pkg.version)), None)
            if match is None:
                match = by_key[(pkg.name, pkg.version, pkg.checksum)] = _Cand(
                    pkg, [len(self.repositories)], {None}, True)
            match.installed = True
        cands = sorted(by_key.values(), key=functools.cmp_to_key(_canonical_cmp))
        for rank, cand in enumerate(cands):
            cand.rank = rank
            uppercase = sorted({letter for letter, _ in cand.pkg.extra if letter.isupper()})
            if uppercase and not cand.installed:
                cand.broken = (f"{cand.label} uses index fields this tool does not understand "
                               f"({', '.join(uppercase)})")
            for name, version in cand.provided_names():
                self.providers.setdefault(name, []).append((cand, version))
            for atom in cand.pkg.install_if:
                self.iif_by_name.setdefault(atom.name, []).append(cand)
        self._mark_broken()

    def _mark_broken(self) -> None:
        """Find packages whose dependencies can never be met, whatever else is chosen."""
        changed = True
        cands = sorted({c for entries in self.providers.values() for c, _ in entries},
                       key=lambda c: c.rank)
        while changed:
            changed = False
            for cand in cands:
                if cand.broken is not None:
                    continue
                for dep in cand.pkg.depends:
                    if dep.conflict:
                        continue
                    why = self._static_problem(cand, dep)
                    if why is not None:
                        cand.broken = why
                        changed = True
                        break

    def _static_problem(self, cand: _Cand, dep: Dependency) -> str | None:
        entries = self.providers.get(dep.name, [])
        if not entries:
            return f"{cand.label} needs {dep.format()}, which nothing provides"
        matching = [c for c, v in entries if dep.matches(v, checksum=c.pkg.checksum)]
        if not matching:
            offered = ", ".join(sorted({c.label for c, _ in entries}))
            return f"{cand.label} needs {dep.format()}, but only {offered} provide {dep.name}"
        if all(c.broken is not None for c in matching):
            return f"{cand.label} needs {dep.format()}: {matching[0].broken}"
        return None

    # -- top level --------------------------------------------------------

    def run(self) -> Resolution:
        tags = {repo.tag for repo in self.repositories if repo.tag}
        state = _State()
        for dep in self.world:
            if dep.tag and dep.tag not in tags:
                raise ResolveError(f"no repository is tagged @{dep.tag} (required by world: {dep.format()})")
            allowed = frozenset({dep.tag}) if dep.tag else frozenset()
            self._enqueue(state, _Need(dep, _WORLD, allowed, dep.tag))
        try:
            state = self._complete(state)
            state = self._add_install_if(state)
        except _Fail as fail:
            raise ResolveError(fail.message()) from None
        return Resolution(self._install_order(state), dict(sorted(state.reasons.items())))

    def _enqueue(self, state: _State, need: _Need) -> None:
        dep = need.dep
        if dep.conflict:
            state.conflicts += ((dep, need.requirer),)
        else:
            state.constraints[dep.name] = state.constraints.get(dep.name, ()) + ((dep, need.requirer),)
        state.pending.append(need)

    def _select(self, state: _State, cand: _Cand, need: _Need) -> None:
        self.steps += 1
        if self.steps > _MAX_STEPS:
            raise ResolveError(f"resolution gave up after {_MAX_STEPS} steps; "
                               "the world has too many conflicting alternatives")
        state.selected[cand.name] = cand
        for name, version in cand.provided_names():
            state.providers[name] = state.providers.get(name, ()) + ((cand, version),)
        state.reasons.setdefault(cand.name, need.reason())
        state.allowed[cand.name] = need.allowed
        for dep in cand.pkg.depends:
            self._enqueue(state, _Need(dep, cand.label, need.allowed, None))

    # -- propagation and search --------------------------------------------

    def _complete(self, state: _State) -> _State:
        """Settle every pending need, branching over alternatives in preference order."""
        self._propagate(state)
        if not state.pending:
            return state
        need = state.pending[0]
        options, _ = self._options(state, need)
        failures: list[str] = []
        for cand in options:
            branch = state.copy()
            branch.pending.popleft()
            self._select(branch, cand, need)
            try:
                return self._complete(branch)
            except _Fail as fail:
                detail = f" ({fail.causes[0]})" if fail.causes else ""
                failures.append(f"choosing {cand.label}: {fail.summary}{detail}")
        raise _Fail(f"cannot satisfy {need.dep.format()} (required by {need.requirer})", failures)

    def _propagate(self, state: _State) -> None:
        """Apply every need that is already met or has exactly one viable candidate."""
        progress = True
        while progress and state.pending:
            progress = False
            waiting: deque[_Need] = deque()
            while state.pending:
                need = state.pending.popleft()
                if need.dep.conflict:
                    self._check_conflict(state, need)
                    progress = True
                    continue
                if self._met(state, need.dep):
                    progress = True
                    continue
                options, rejected = self._options(state, need)
                if not options:
                    raise self._no_candidate(need, rejected)
                if len(options) == 1:
                    self._select(state, options[0], need)
                    progress = True
                else:
                    waiting.append(need)
            state.pending = waiting

    def _met(self, state: _State, dep: Dependency) -> bool:
        return any(dep.matches(v, checksum=c.pkg.checksum) for c, v in state.providers.get(dep.name, ()))

    def _check_conflict(self, state: _State, need: _Need) -> None:
        for cand, version in state.providers.get(need.dep.name, ()):
            if not need.dep.satisfied_by(version, checksum=cand.pkg.checksum):
                raise _Fail(f"{need.requirer} conflicts with {cand.label} ({need.dep.format()})")

    def _no_candidate(self, need: _Need, rejected: list[str]) -> _Fail:
        dep = need.dep
        if not self.providers.get(dep.name):
            elsewhere = self.other_arch.get(dep.name)
            if elsewhere:
                return _Fail(f"no package provides '{dep.name}' for this architecture "
                             f"(required by {need.requirer})", [f"only {', '.join(elsewhere)}"])
            return _Fail(f"no package provides '{dep.name}' (required by {need.requirer})")
        return _Fail(f"cannot satisfy {dep.format()} (required by {need.requirer})", rejected)

    def _options(self, state: _State, need: _Need) -> tuple[list[_Cand], list[str]]:
        """Viable candidates for ``need`` in preference order, and why the others were rejected."""
        if need.cand is not None:
            entries: list[tuple[_Cand, str | None]] = [(need.cand, need.cand.pkg.version)]
        else:
            entries = self.providers.get(need.dep.name, [])
        viable: list[_Cand] = []
        rejected: list[str] = []
        for cand, version in entries:
            why = self._rejection(state, need, cand, version)
            if why is None:
                viable.append(cand)
            else:
                rejected.append(why)
        viable.sort(key=functools.cmp_to_key(lambda a, b: self._prefer(need, a, b)))
        return viable, rejected

    def _rejection(self, state: _State, need: _Need, cand: _Cand, version: str | None) -> str | None:
        dep, label = need.dep, cand.label
        if cand.broken is not None:
            return cand.broken
        if not dep.matches(version, checksum=cand.pkg.checksum):
            return _mismatch(cand, dep.name, version, dep, need.requirer)
        for other, requirer in state.constraints.get(dep.name, ()):
            if not other.matches(version, checksum=cand.pkg.checksum):
                return _mismatch(cand, dep.name, version, other, requirer)
        if (version is None and not cand.pkg.provider_priority and cand.name not in state.constraints
                and need.cand is None):
            return (f"{label} provides {dep.name} without a version and has no provider_priority; "
                    f"add {cand.name} to the world to choose it")
        if not (None in cand.tags or cand.installed or cand.tags & need.allowed):
            tags = ", ".join(sorted(f"@{t}" for t in cand.tags if t))
            return f"{label} is only in repositories tagged {tags}; ask for {cand.name}@<tag> to allow it"
        return self._clash(state, cand)

    def _clash(self, state: _State, cand: _Cand) -> str | None:
        """Why selecting ``cand`` is incompatible with what is already selected, if it is."""
        label = cand.label
        current = state.selected.get(cand.name)
        if current is not None and current is not cand:
            return f"{label} conflicts with selected {current.label}"
        for name, version in cand.provided_names():
            for other, other_version in state.providers.get(name, ()):
                if other is cand or (version is None and other_version is None):
                    continue
                return f"{label} and selected {other.label} both provide {name}"
            for conflict, requirer in state.conflicts:
                if conflict.name == name and not conflict.satisfied_by(version, checksum=cand.pkg.checksum):
                    return f"{label} is excluded by {requirer} ({conflict.format()})"
            if version is not None and name != cand.name:
                for other_dep, requirer in state.constraints.get(name, ()):
                    if not other_dep.matches(version, checksum=cand.pkg.checksum):
                        return _mismatch(cand, name, version, other_dep, requirer)
        for dep in cand.pkg.depends:
            if not dep.conflict:
                continue
            for other, version in state.providers.get(dep.name, ()):
                if other is not cand and not dep.satisfied_by(version, checksum=other.pkg.checksum):
                    return f"{label} conflicts with selected {other.label} ({dep.format()})"
        return None

    def _prefer(self, need: _Need, a: _Cand, b: _Cand) -> int:
        """apk's compare_providers, best first; ties end in a canonical order."""
        def key_tag(c: _Cand) -> bool:
            return need.preferred in c.tags if need.requirer == _WORLD else None in c.tags

        for better in (key_tag(a) - key_tag(b),
                       (a.installed - b.installed) if not self.upgrade else 0):
            if better:
                return -better
        name = need.dep.name
        va, vb = a.provided_version(name), b.provided_version(name)
        if va is not None and vb is not None:
            r = compare_versions(va, vb)
            if r:
                return -r
        elif va is not None or vb is not None:
            return -1 if va is not None else 1
        if a.name == b.name:
            r = compare_versions(a.pkg.version, b.pkg.version)
            if r:
                return -r
        for better in (a.installed - b.installed,
                       (a.pkg.provider_priority or 0) - (b.pkg.provider_priority or 0),
                       min(b.repos) - min(a.repos)):
            if better:
                return -1 if better > 0 else 1
        return a.rank - b.rank

    # -- install_if ---------------------------------------------------------

    def _add_install_if(self, state: _State) -> _State:
        """Add packages whose install_if conditions the selection meets, until none is left."""
        while True:
            for cand in self._triggered(state):
                allowed = frozenset().union(*(state.allowed.get(a.name, frozenset())
                                              for a in cand.pkg.install_if))
                need = _Need(Dependency(cand.name), "install_if", allowed, None, cand)
                if self._rejection(state, need, cand, cand.pkg.version) is not None:
                    state.iif_rejected.add(cand.rank)
                    continue
                branch = state.copy()
                self._select(branch, cand, need)
                try:
                    state = self._complete(branch)
                    break
                except _Fail:
                    state.iif_rejected.add(cand.rank)
            else:
                return state

    def _triggered(self, state: _State) -> list[_Cand]:
        seen: dict[int, _Cand] = {}
        for name in state.providers:
            for cand in self.iif_by_name.get(name, ()):
                if (cand.rank not in state.iif_rejected and cand.name not in state.selected
                        and cand.broken is None
                        and all(self._iif_met(state, a) for a in cand.pkg.install_if)):
                    seen[cand.rank] = cand
        best: dict[str, _Cand] = {}
        for cand in sorted(seen.values(), key=lambda c: c.rank):
            current = best.get(cand.name)
            need = _Need(Dependency(cand.name), "install_if", frozenset(), None)
            if current is None or self._prefer(need, cand, current) < 0:
                best[cand.name] = cand
        return [best[name] for name in sorted(best)]

    def _iif_met(self, state: _State, atom: Dependency) -> bool:
        found = [(c, v) for c, v in state.providers.get(atom.name, ())]
        if atom.conflict:
            return all(atom.satisfied_by(v, checksum=c.pkg.checksum) for c, v in found)
        return any(atom.matches(v, checksum=c.pkg.checksum) for c, v in found)

    # -- ordering -------------------------------------------------------------

    def _install_order(self, state: _State) -> tuple[PackageInfo, ...]:
        """Dependencies first, walking the world in name order as apk does.

        A cycle is broken where the walk first comes back to a package; an
        install_if package follows as soon as everything it waits for is placed.
        """
        done: set[str] = set()
        placed: set[str] = set()
        order: list[PackageInfo] = []
        waiting = sorted((c for c in state.selected.values() if c.pkg.install_if),
                         key=lambda c: c.name)

        def ready(cand: _Cand) -> bool:
            return all(any(c.name in placed for c, _ in state.providers.get(a.name, ()))
                       for a in cand.pkg.install_if if not a.conflict)

        def visit(cand: _Cand) -> None:
            if cand.name in done:
                return
            done.add(cand.name)
            for target in self._dep_targets(state, cand):
                visit(target)
            order.append(cand.pkg)
            placed.add(cand.name)
            for other in waiting:
                if other.name not in done and ready(other):
                    visit(other)

        for dep in sorted(self.world, key=lambda d: d.name):
            for target in self._targets(state, dep):
                visit(target)
        for name in sorted(state.selected):
            visit(state.selected[name])
        return tuple(order)

    def _targets(self, state: _State, dep: Dependency) -> list[_Cand]:
        if dep.conflict:
            return []
        found = [c for c, v in state.providers.get(dep.name, ()) if dep.matches(v, checksum=c.pkg.checksum)]
        return sorted(found, key=lambda c: c.rank)[:1]

    def _dep_targets(self, state: _State, cand: _Cand) -> list[_Cand]:
        return [t for dep in cand.pkg.depends for t in self._targets(state, dep)]


def _mismatch(cand: _Cand, name: str, version: str | None, dep: Dependency, requirer: str) -> str:
    if name == cand.name:
        return f"{cand.label} does not satisfy {dep.format()} (required by {requirer})"
    shown = f"{name}={version}" if version is not None else f"{name} without a version"
    return f"{cand.label} provides {shown}, which does not satisfy {dep.format()} (required by {requirer})"


def _canonical_cmp(a: _Cand, b: _Cand) -> int:
    """A total order independent of input order: name, newest version first, then checksum and repository."""
    if a.name != b.name:
        return -1 if a.name < b.name else 1
    r = compare_versions(b.pkg.version, a.pkg.version)
    if r:
        return r
    ka = (a.pkg.version, a.pkg.checksum or "", min(a.repos))
    kb = (b.pkg.version, b.pkg.checksum or "", min(b.repos))
    return (ka > kb) - (ka < kb)
