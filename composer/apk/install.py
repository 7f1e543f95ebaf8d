"""Merge verified packages into a :class:`FileTree` the way ``apk add --no-scripts`` would.

Nothing is extracted to the host. File ownership follows apk-tools 2.x
(``apk_db_install_archive_entry``): a path owned by another package may be
overwritten only by an upgrade of the same package, a package of the same
origin, identical content, or a ``replaces`` relation; otherwise the install
fails naming both packages. A directory already in the tree keeps its owner and
mode (apk only applies a package's directory mode when it creates the folder). The
database files are written as apk 2.x writes
them, so the real ``apk`` can manage the result. Script effects are applied
afterwards by :mod:`composer.apk.effects`.
"""

from __future__ import annotations

import fnmatch
import heapq
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from composer.apk import db
from composer.apk.datatar import load_package_data
from composer.apk.effects import ScriptContext, ScriptReport, emulate_script, finish_scripts
from composer.apk.index import PackageInfo
from composer.apk.package import DataContents, VerifiedPackage
from composer.errors import InstallError, VerificationError
from composer.system.accounts import AccountFiles
from composer.tree import Entry, EntryType, FileTree, parent_of

_NAME_END = re.compile(r"[<>=~]")
_Got = tuple["PackageToInstall", "tuple[FileTree, DataContents] | None"]


@dataclass(frozen=True)
class PackageToInstall:
    """A verified package and, when it came from a repository, its index record."""

    package: VerifiedPackage
    index: PackageInfo | None = None
    refetch: Callable[[], VerifiedPackage] | None = field(default=None, compare=False)
    """Gets the package again, verified in full, if its data fails the hash check at load
    time (a damaged cached copy); None: such a failure is final."""


@dataclass
class InstallReport:
    """What :func:`install_packages` did, for the build manifest."""

    database: list[db.InstalledPackage]
    added: list[str] = field(default_factory=list)
    upgraded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed_paths: list[str] = field(default_factory=list)
    scripts: list[ScriptReport] = field(default_factory=list)
    effects: list[str] = field(default_factory=list)


def _dep_name(text: str) -> str:
    return _NAME_END.split(text.lstrip("!"), 1)[0].split("@", 1)[0]


def _read(tree: FileTree, path: str) -> bytes | None:
    entry = tree.get(path)
    if entry is None or entry.type != EntryType.FILE or entry.blob is None:
        return None
    return entry.blob.read()


def _same_content(a: Entry, b: Entry) -> bool:
    return (a.type, a.target, a.blob.sha256 if a.blob else None, a.devmajor, a.devminor) == (
        b.type, b.target, b.blob.sha256 if b.blob else None, b.devmajor, b.devminor)


class _Installer:
    def __init__(self, tree: FileTree, *, mtime: int) -> None:
        self.tree = tree
        self.mtime = mtime
        raw = _read(tree, db.INSTALLED_PATH)
        self.records: dict[str, db.InstalledPackage] = {
            p.name: p for p in (db.parse_installed(raw) if raw else [])}
        self.order: list[str] = list(self.records)
        raw_scripts = _read(tree, db.SCRIPTS_PATH)
        self.scripts: dict[str, list[db.ScriptFile]] = {}
        for s in db.parse_scripts_tar(raw_scripts) if raw_scripts else []:
            self.scripts.setdefault(s.name, []).append(s)
        self.script_order = list(self.scripts)
        raw_triggers = _read(tree, db.TRIGGERS_PATH)
        by_checksum = {p.checksum: p.name for p in self.records.values()}
        self.triggers: dict[str, tuple[str, ...]] = {}
        for t in db.parse_triggers(raw_triggers) if raw_triggers else []:
            if t.checksum in by_checksum:
                self.triggers[by_checksum[t.checksum]] = t.globs
        self.file_owner: dict[str, str] = {}
        self.dir_owners: dict[str, list[str]] = {}
        for record in self.records.values():
            self._index_record(record)
        self.touched_dirs: set[str] = set()
        self.new_or_upgraded: list[tuple[VerifiedPackage, bool]] = []

    def _index_record(self, record: db.InstalledPackage) -> None:
        for d in record.dirs:
            self.dir_owners.setdefault(d.path, []).append(record.name)
        for path in record.paths():
            self.file_owner[path] = record.name

    def is_unchanged(self, pkg: VerifiedPackage) -> bool:
        old = self.records.get(pkg.name)
        return old is not None and old.checksum == pkg.checksum

    def load(self, item: PackageToInstall) -> tuple[PackageToInstall, FileTree, DataContents]:
        """Inflate one package into a private tree sharing the blob store (thread-safe part).

        Nothing reaches the real tree before the data matched its signed hash; a package
        that fails that check is fetched again once when the item says how.
        """
        try:
            return (item, *load_package_data(item.package, self.tree.store))
        except VerificationError:
            if item.refetch is None or item.package.data_checked:
                raise
        again = item.refetch()
        if again.checksum != item.package.checksum:
            raise VerificationError(f"{again.label}: fetched again, but the package changed")
        item = replace(item, package=again, refetch=None)
        return (item, *load_package_data(item.package, self.tree.store))

    def install(self, item: PackageToInstall, loaded: tuple[FileTree, DataContents],
                report: InstallReport) -> None:
        pkg = item.package
        old = self.records.get(pkg.name)
        scratch, contents = loaded
        record = self._record_for(item)
        dirs: dict[str, db.DbDir] = {}
        link_ids: dict[int, int] = {}
        new_files: set[str] = set()

        def dir_record(path: str, acl: db.Acl = db.DEFAULT_DIR_ACL) -> db.DbDir:
            found = dirs.get(path)
            if found is None:
                found = dirs[path] = db.DbDir(path=path, acl=acl)
                record.dirs.append(found)
            return found

        for path in contents.paths:
            if path == "":
                continue
            entry = scratch.entries[path]
            acl = db.Acl(entry.uid, entry.gid, entry.mode, db.xattr_digest(entry.xattrs))
            if entry.type == EntryType.DIR:
                dir_record(path, acl)
                self._merge_dir(pkg, entry)
                continue
            parent = parent_of(path)
            keep_old = self._may_write(pkg, record, entry, path)
            digest = contents.z_checksum(path) or ""
            if not digest and entry.type == EntryType.FILE and entry.link_id:
                digest = next((contents.z_checksum(p) or "" for p in contents.paths
                               if p != path and scratch.entries[p].link_id == entry.link_id
                               and contents.z_checksum(p)), "")
            if keep_old:
                continue
            if entry.link_id:
                new_id = link_ids.get(entry.link_id)
                if new_id is None:
                    new_id = link_ids[entry.link_id] = self.tree.new_link_id()
                entry = entry.with_changes(link_id=new_id)
            self.tree.ensure_parents(path, mtime=entry.mtime)
            self.tree.put(entry, what=f"{pkg.label}: file")
            dir_record(parent).files.append(
                db.DbFile(name=path.rpartition("/")[2], acl=acl, digest=digest))
            new_files.add(path)
            self.file_owner[path] = pkg.name
            self.touched_dirs.add(parent)
        if old is not None:
            self._remove_old(old, new_files, set(dirs), report)
            self.order.remove(pkg.name)
            for d in old.dirs:
                owners = self.dir_owners.get(d.path, [])
                if pkg.name in owners:
                    owners.remove(pkg.name)
            report.upgraded.append(f"{pkg.name} {old.version} -> {pkg.version}")
        else:
            report.added.append(f"{pkg.name}-{pkg.version}")
        for d in record.dirs:
            self.dir_owners.setdefault(d.path, []).append(pkg.name)
        self.records[pkg.name] = record
        self.order.append(pkg.name)
        self._store_scripts(pkg)
        if pkg.info.triggers:
            self.triggers.pop(pkg.name, None)
            self.triggers[pkg.name] = tuple(pkg.info.triggers)
        else:
            self.triggers.pop(pkg.name, None)
        self.new_or_upgraded.append((pkg, old is not None))

    def _record_for(self, item: PackageToInstall) -> db.InstalledPackage:
        pkg, index = item.package, item.package.info
        record = db.InstalledPackage(
            checksum=pkg.checksum, name=pkg.name, version=pkg.version, arch=index.arch,
            size=pkg.file_size, installed_size=index.size, description=index.pkgdesc,
            url=index.url, license=index.license, origin=index.origin,
            maintainer=index.maintainer, build_time=index.builddate or 0, commit=index.commit,
            provider_priority=index.provider_priority or 0, depends=list(index.depends),
            provides=list(index.provides), install_if=list(index.install_if),
            replaces=list(index.replaces), replaces_priority=index.replaces_priority or 0)
        if item.index is not None:
            # apk records the repository's view of a package (e.g. A:x86_64 for noarch)
            ix = item.index
            texts = {"arch": ix.arch, "description": ix.description, "url": ix.url,
                     "license": ix.license, "origin": ix.origin, "maintainer": ix.maintainer,
                     "commit": ix.commit}
            for attr, value in texts.items():
                if value is not None:
                    setattr(record, attr, value)
            numbers = {"size": ix.size, "installed_size": ix.installed_size,
                       "build_time": ix.build_time, "provider_priority": ix.provider_priority}
            for attr, number in numbers.items():
                if number is not None:
                    setattr(record, attr, number)
            record.depends = [d.format() for d in ix.depends]
            record.provides = [d.format() for d in ix.provides]
            record.install_if = [d.format() for d in ix.install_if]
            if ix.tag:
                record.repository_tag = ix.tag
        return record

    def _merge_dir(self, pkg: VerifiedPackage, entry: Entry) -> None:
        existing = self.tree.get(entry.path)
        if existing is None:
            self.tree.ensure_parents(entry.path, mtime=entry.mtime)
            self.tree.put(entry, what=f"{pkg.label}: directory")
        elif existing.type != EntryType.DIR:
            owner = self.file_owner.get(entry.path)
            whose = f" (owned by {self._label(owner)})" if owner else ""
            raise InstallError(f"{pkg.label}: directory /{entry.path} conflicts with a "
                               f"{existing.type.value} already in the tree{whose}")

    def initdb(self) -> None:
        """What ``apk --initdb`` creates before the first package (device nodes left out)."""
        if self.records or db.INSTALLED_PATH in self.tree:
            return
        for path, mode in (("dev", 0o755), ("etc/apk", 0o755), ("lib/apk/db", 0o755),
                           ("proc", 0o555), ("tmp", 0o1777), ("var/cache/apk", 0o755),
                           ("var/cache/misc", 0o755)):
            if path not in self.tree:
                self.tree.ensure_parents(path, mtime=self.mtime)
                self.tree.put(Entry(path=path, type=EntryType.DIR, mode=mode, mtime=self.mtime))

    def _label(self, name: str | None) -> str:
        record = self.records.get(name or "")
        return f"{record.name}-{record.version}" if record else str(name)

    def _may_write(self, pkg: VerifiedPackage, record: db.InstalledPackage, entry: Entry,
                   path: str) -> bool:
        """Check ownership of ``path``; True means "keep the old file" (replaces priority)."""
        existing = self.tree.get(path)
        if existing is not None and existing.type == EntryType.DIR:
            raise InstallError(f"{pkg.label}: {entry.type.value} /{path} conflicts with a "
                               "directory already in the tree")
        owner_name = self.file_owner.get(path)
        if owner_name is None or owner_name == pkg.name:
            return False
        owner = self.records[owner_name]
        same_origin = bool(owner.origin) and owner.origin == record.origin
        new_replaces = owner.name in {_dep_name(r) for r in record.replaces}
        old_replaces = pkg.name in {_dep_name(r) for r in owner.replaces}
        if old_replaces and not new_replaces and owner.replaces_priority > 0:
            return True
        if old_replaces and new_replaces and owner.replaces_priority > record.replaces_priority:
            return True
        identical = existing is not None and _same_content(existing, entry)
        if not (same_origin or new_replaces or identical):
            raise InstallError(
                f"{pkg.label}: file /{path} conflicts with package {self._label(owner_name)} "
                f"(different content; {pkg.name} does not replace {owner_name})")
        self._disown(owner, path)
        return False

    def _disown(self, owner: db.InstalledPackage, path: str) -> None:
        directory, _, name = path.rpartition("/")
        for d in owner.dirs:
            if d.path == directory:
                d.files = [f for f in d.files if f.name != name]

    def _remove_old(self, old: db.InstalledPackage, new_files: set[str], new_dirs: set[str],
                    report: InstallReport) -> None:
        for path in old.paths():
            if path in new_files or self.file_owner.get(path) != old.name:
                continue
            del self.file_owner[path]
            entry = self.tree.get(path)
            if entry is not None and entry.type != EntryType.DIR:
                self.tree.remove(path)
                report.removed_paths.append(path)
                self.touched_dirs.add(parent_of(path))
        stale = [d.path for d in old.dirs if d.path and d.path not in new_dirs
                 and self.dir_owners.get(d.path) == [old.name]]
        if not stale:
            return
        populated = {parent_of(p) for p in self.tree.entries}
        for path in sorted(stale, key=lambda p: p.count("/"), reverse=True):
            entry = self.tree.get(path)
            if entry is not None and entry.type == EntryType.DIR and path not in populated:
                self.tree.remove(path)
                report.removed_paths.append(path)
                populated = {parent_of(p) for p in self.tree.entries}

    def _store_scripts(self, pkg: VerifiedPackage) -> None:
        self.scripts.pop(pkg.name, None)
        if pkg.name in self.script_order:
            self.script_order.remove(pkg.name)
        stored = [db.ScriptFile(name=pkg.name, version=pkg.version, checksum=pkg.checksum,
                                action=s.name.lstrip("."), data=s.data,
                                mtime=pkg.info.builddate or 0)
                  for s in sorted(pkg.scripts, key=lambda s: db.SCRIPT_ACTIONS.index(
                      s.name.lstrip(".")))]
        if stored:
            self.scripts[pkg.name] = stored
            self.script_order.append(pkg.name)

    def write_database(self, *, world: Sequence[str], repositories: Sequence[str] | None,
                       arch: str, keys: Mapping[str, bytes]) -> list[db.InstalledPackage]:
        ordered = [self.records[n] for n in sorted(self.records)]
        files = {
            db.INSTALLED_PATH: db.format_installed(ordered),
            db.SCRIPTS_PATH: db.format_scripts_tar(
                [s for n in self.script_order for s in self.scripts[n]]),
            db.TRIGGERS_PATH: db.format_triggers(
                db.TriggerLine(self.records[n].checksum, g) for n, g in self.triggers.items()),
            db.WORLD_PATH: db.format_world(world),
            db.ARCH_PATH: f"{arch}\n".encode(),
        }
        if repositories is not None:
            files[db.REPOSITORIES_PATH] = "".join(f"{r}\n" for r in repositories).encode()
        for name, pem in sorted(keys.items()):
            if "/" in name or name in ("", ".", ".."):
                raise InstallError(f"trusted key name {name!r} is not a plain file name")
            files[f"{db.KEYS_DIR}/{name}"] = pem
        for path, data in files.items():
            self.tree.ensure_parents(path, mtime=self.mtime)
            old = self.tree.get(path)
            mode = old.mode if old is not None and old.type == EntryType.FILE else 0o644
            self.tree.put(Entry(path=path, type=EntryType.FILE, mode=mode, mtime=self.mtime,
                                blob=self.tree.store.from_bytes(data)))
        if db.LOCK_PATH not in self.tree:
            self.tree.put(Entry(path=db.LOCK_PATH, type=EntryType.FILE, mode=0o600,
                                mtime=self.mtime, blob=self.tree.store.from_bytes(b"")))
        return ordered

    def run_effects(self, report: InstallReport, *, epoch: int) -> None:
        ctx = ScriptContext(tree=self.tree, accounts=AccountFiles(self.tree, epoch=epoch),
                            mtime=self.mtime)
        for pkg, upgraded in self.new_or_upgraded:
            for action in (("pre-upgrade", "post-upgrade") if upgraded
                           else ("pre-install", "post-install")):
                script = pkg.script("." + action)
                if script is not None:
                    report.scripts.append(emulate_script(ctx, f"{pkg.name}-{pkg.version}", action,
                                                        script.data))
        fired = sorted(self.touched_dirs)
        for name in sorted(self.triggers):
            globs = self.triggers[name]
            matched = [f"/{d}" for d in fired
                       if any(fnmatch.fnmatchcase(f"/{d}", g.lstrip("+")) for g in globs)]
            body = next((s.data for s in self.scripts.get(name, []) if s.action == "trigger"),
                        None)
            if matched and body is not None:
                label = f"{name}-{self.records[name].version}"
                scripts_report = emulate_script(ctx, label, "trigger", body)
                scripts_report.effects.insert(0, f"fired by {' '.join(matched)}")
                report.scripts.append(scripts_report)
        report.effects.extend(finish_scripts(
            ctx, ca_certificates_installed="ca-certificates" in self.records))


@dataclass(frozen=True)
class PackageToFetch:
    """A package known by its index record, fetched and verified by the thread that then
    loads it (``fetch``): verification, inflating and hashing of one package stay on one
    thread, and the largest package starts first instead of where the resolver put it."""

    index: PackageInfo
    fetch: Callable[[], VerifiedPackage] = field(compare=False)
    refetch: Callable[[], VerifiedPackage] | None = field(default=None, compare=False)
    """As for :class:`PackageToInstall`."""


class _LargestFirst:
    """Gets (fetches and verifies, when it was not given verified) and loads each package
    on a thread pool, the largest waiting one first, into one future per package. In
    resolver order one big package (libcrypto3 is half the bytes of a small world) can
    start last and finish alone while the other threads idle."""

    def __init__(self, installer: _Installer, pool: ThreadPoolExecutor) -> None:
        self._installer = installer
        self._pool = pool
        self._lock = threading.Lock()
        self._waiting: list[tuple[int, int, Callable[[], PackageToInstall], Future[_Got]]] = []
        self.futures: list[Future[_Got]] = []

    def add(self, size: int, get: Callable[[], PackageToInstall]) -> None:
        """Queue one package (before :meth:`start`); its future holds the package as
        loaded (refetched, if its cached copy was damaged) and its files, or None for
        its files when the same package is already installed."""
        future: Future[_Got] = Future()
        heapq.heappush(self._waiting, (-size, len(self.futures), get, future))
        self.futures.append(future)

    def start(self) -> None:
        """One task per package added; each takes the largest still waiting."""
        for _ in self.futures:
            self._pool.submit(self._next_largest)

    def _next_largest(self) -> None:
        with self._lock:
            _, _, get, future = heapq.heappop(self._waiting)
        if not future.set_running_or_notify_cancel():
            return
        try:
            item = get()
            if self._installer.is_unchanged(item.package):
                future.set_result((item, None))
            else:
                loaded, scratch, contents = self._installer.load(item)
                future.set_result((loaded, (scratch, contents)))
        except BaseException as exc:  # handed to the merging thread, which raises it
            future.set_exception(exc)

    def cancel(self) -> None:
        for future in self.futures:
            future.cancel()


def _as_job(given: PackageToInstall | VerifiedPackage | PackageToFetch,
            ) -> tuple[str, str, int, Callable[[], PackageToInstall]]:
    """(name, label, size, get) for the scheduler."""
    if isinstance(given, PackageToFetch):
        def fetched() -> PackageToInstall:
            return PackageToInstall(given.fetch(), given.index, refetch=given.refetch)

        info = given.index
        return info.name, info.label, info.size or 0, fetched
    item = PackageToInstall(given) if isinstance(given, VerifiedPackage) else given
    return item.package.name, item.package.label, item.package.file_size, lambda: item


def install_packages(tree: FileTree,
                     packages: Iterable[PackageToInstall | VerifiedPackage | PackageToFetch], *,
                     world: Sequence[str], arch: str, keys: Mapping[str, bytes],
                     repositories: Sequence[str] | None = None, epoch: int = 0,
                     run_effects: bool = True, workers: int = 2) -> InstallReport:
    """Install ``packages`` (in resolver order) into ``tree`` and write apk's database.

    The tree's existing ``lib/apk/db`` (e.g. from a minirootfs) is read first:
    a package whose checksum is already installed is left alone, a different
    version is upgraded (its files missing from the new version are removed).
    ``world`` is written as the complete ``etc/apk/world``; ``repositories``,
    when given, replaces ``etc/apk/repositories``; ``keys`` (file name → PEM)
    are added to ``etc/apk/keys``. ``epoch`` dates files composer writes and
    accounts' shadow entries. Script effects run unless ``run_effects`` is False.
    ``workers`` threads fetch, verify and inflate packages, the largest first; the
    result does not depend on their number or order. Nothing is merged before every
    package was got and loaded; the first failure in resolver order is raised.
    """
    installer = _Installer(tree, mtime=epoch)
    installer.initdb()
    report = InstallReport(database=[])
    seen: set[str] = set()
    # Inflating and hashing release the GIL, so packages load in parallel; merging into
    # the tree is sequential, in resolver order.
    with ThreadPoolExecutor(max(1, workers)) as pool:
        loads = _LargestFirst(installer, pool)
        try:
            for given in packages:
                name, label, size, get = _as_job(given)
                if name in seen:
                    raise InstallError(f"{label}: package {name} is listed twice in the "
                                       "install set")
                seen.add(name)
                loads.add(size, get)
            loads.start()
            got = [future.result() for future in loads.futures]
        finally:
            loads.cancel()
    for item, files in got:
        if files is None:
            report.unchanged.append(f"{item.package.name}-{item.package.version}")
        else:
            installer.install(item, files, report)
    report.database = installer.write_database(world=world, repositories=repositories,
                                               arch=arch, keys=keys)
    if run_effects:
        installer.run_effects(report, epoch=epoch)
    return report
