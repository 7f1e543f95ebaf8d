"""Command line: argv → BuildContext → pipeline; ComposerError → one line + exit code.

Exit codes: 0 ok, 1 other error, 2 bad usage or profile (or a feature not available),
3 download failed, 4 verification failed (signature, checksum, outputs differ),
5 malformed or unsafe archive/package, 6 packages cannot be resolved or installed,
130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from composer import __version__
from composer.errors import ComposerError, UsageError

if TYPE_CHECKING:
    from composer.manifest import OutputRecord

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
DEFAULT_RETRIES = 4
DEFAULT_RETRY_DELAY = 0.5
DEFAULT_TIMEOUT = 10.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"{self.prog}: {message}")


def _common(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """--json and --debug; on the subcommand their defaults are suppressed so that a flag given
    before the subcommand (``alpine-composer --debug build …``) is not reset after it."""
    default: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout",
                        **default)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors", **default)


def _build_flags(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """The flags of the commands that fetch and build, accepted on both sides of the subcommand."""

    def default(value: Any) -> dict[str, Any]:
        return {"default": value if top else argparse.SUPPRESS}

    parser.add_argument("--mirror", help="override the profile's mirror (http://, https://, file:// "
                        "or a local folder)", **default(None))
    parser.add_argument("--output-dir", type=Path, help="where <name>/ is written (default: out)",
                        **default(None))
    parser.add_argument("--cache-dir", type=Path,
                        help="download cache (default: $XDG_CACHE_HOME/alpine-composer)",
                        **default(None))
    parser.add_argument("--offline", action="store_true",
                        help="use only the cache; fail naming anything missing", **default(False))
    parser.add_argument("--retries", type=int, metavar="N",
                        help=f"extra attempts after a timeout, 5xx, reset or short read "
                        f"(default {DEFAULT_RETRIES})", **default(DEFAULT_RETRIES))
    parser.add_argument("--retry-delay", type=float, metavar="SECONDS",
                        help=f"first wait between attempts, doubled each time (default "
                        f"{DEFAULT_RETRY_DELAY})", **default(DEFAULT_RETRY_DELAY))
    parser.add_argument("--allow-host-paths", action="store_true",
                        help="let overlay sources and trees come from outside the profile's folder",
                        **default(False))
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help=f"give up on a connection that sends nothing for this long (default "
                        f"{DEFAULT_TIMEOUT:g})", **default(DEFAULT_TIMEOUT))


def _lock_file_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lock", type=Path, metavar="FILE",
                        help="the lock file (default: <profile>.lock.json beside the profile)")


def _lock_flags(parser: argparse.ArgumentParser) -> None:
    locks = parser.add_mutually_exclusive_group()
    locks.add_argument("--lock", type=Path, metavar="FILE",
                       help="install exactly what this lock pins (default: <profile>.lock.json "
                       "when it exists)")
    locks.add_argument("--no-lock", action="store_true",
                       help="resolve against the mirror even when a lock exists")


def _push_flags(parser: argparse.ArgumentParser, *, network: bool = False) -> None:
    """How to reach registries; ``network`` adds the timeout/retry/cache flags that
    ``publish`` has from the build flags already."""
    parser.add_argument("--ca-cert", type=Path, metavar="FILE",
                        help="trust this CA certificate (PEM) for the registry's TLS")
    parser.add_argument("--insecure", action="store_true",
                        help="plain HTTP, no TLS (a registry on loopback, for tests)")
    parser.add_argument("--chunk-size", metavar="SIZE",
                        help="blobs larger than this go up in chunks of this size (default 8M)")
    if network:
        parser.add_argument("--cache-dir", type=Path,
                            help="where blob locations are remembered for cross-repository mounts")
        parser.add_argument("--retries", type=int, metavar="N", default=DEFAULT_RETRIES,
                            help=f"extra attempts after a timeout, 5xx or reset (default {DEFAULT_RETRIES})")
        parser.add_argument("--retry-delay", type=float, metavar="SECONDS", default=DEFAULT_RETRY_DELAY,
                            help=f"first wait between attempts, doubled each time (default "
                            f"{DEFAULT_RETRY_DELAY})")
        parser.add_argument("--timeout", type=float, metavar="SECONDS", default=DEFAULT_TIMEOUT,
                            help=f"give up on a connection that sends nothing for this long "
                            f"(default {DEFAULT_TIMEOUT:g})")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="alpine-composer",
                     description="Build reproducible Alpine Linux root filesystems and images.")
    parser.add_argument("--version", action="version", version=f"alpine-composer {__version__}")
    _build_flags(parser, top=True)
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("build", help="build every output of a profile into <output-dir>/<name>/")
    p.add_argument("profile", type=Path)
    _lock_flags(p)
    p.add_argument("--sign", type=Path, metavar="KEYFILE",
                   help="sign SHA256SUMS with this OpenPGP secret key (a protected key's "
                   "passphrase is read from $ALPINE_COMPOSER_SIGNING_PASSPHRASE)")
    _build_flags(p)
    _common(p)

    p = sub.add_parser("fetch", help="download and verify a profile's inputs only")
    p.add_argument("profile", type=Path)
    _lock_flags(p)
    _build_flags(p)
    _common(p)

    p = sub.add_parser("lock", help="resolve a profile and pin every input in <profile>.lock.json")
    p.add_argument("profile", type=Path)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--update", action="store_true",
                     help="resolve again and rewrite the lock, printing what changed")
    how.add_argument("--check", action="store_true",
                     help="exit non-zero when the lock is stale (the profile or the mirror moved on)")
    _lock_file_flag(p)
    _build_flags(p)
    _common(p)

    p = sub.add_parser("vendor", help="copy every locked input into DIR, laid out as an Alpine "
                       "mirror (for offline rebuilds with --mirror DIR)")
    p.add_argument("profile", type=Path)
    p.add_argument("dir", type=Path)
    _lock_file_flag(p)
    _build_flags(p)
    _common(p)

    p = sub.add_parser("verify", help="check outputs against SHA256SUMS/manifest.json, or rebuild")
    p.add_argument("target", type=Path,
                   help="an output folder, an artifact, or a profile (its output folder); "
                   "with --rebuild, a profile")
    p.add_argument("--rebuild", action="store_true",
                   help="build the profile again and compare byte for byte with its published outputs")
    p.add_argument("--signature", type=Path, metavar="KEYFILE",
                   help="also check SHA256SUMS.asc against this OpenPGP public key")
    _build_flags(p)
    _common(p)

    p = sub.add_parser("diff", help="show what differs between two artifacts or output folders: "
                       "packages, files, then format fields")
    p.add_argument("a", type=Path, metavar="A",
                   help="a tarball, OCI layout or archive, docker-archive, ISO, or output folder")
    p.add_argument("b", type=Path, metavar="B", help="the same kind of thing to compare with A")
    p.add_argument("--limit", type=int, default=20, metavar="N",
                   help="changes shown per level (packages, files, format fields; default 20)")
    _common(p)

    p = sub.add_parser("boot", help="start a built ISO or disk image in qemu (serial console "
                                    "on this terminal)")
    p.add_argument("target", type=Path,
                   help="an output folder, an .iso, .img or .qcow2 file, or a profile (its output "
                        "folder)")
    p.add_argument("--firmware", choices=["bios", "uefi"],
                   help="default: bios for an ISO; a disk image boots with uefi only")
    p.add_argument("--as", dest="medium", choices=["cd", "disk"],
                   help="attach an ISO as a CD drive (default) or as a disk (as after dd to a "
                        "USB stick)")
    p.add_argument("--image", dest="kind", choices=["iso", "disk"],
                   help="which output of a folder to boot (default: the ISO if there is one); a "
                        "disk image is attached as a virtio disk with snapshot=on, so the image "
                        "file is never modified")
    p.add_argument("--nvme", action="store_true", help="attach a disk image as an NVMe drive")
    p.add_argument("--secure-boot", action="store_true",
                   help="boot a signed disk image (x86_64) with OVMF's Secure Boot firmware and "
                        "a temporary copy of its variables with the image's certificate "
                        "(<image>.crt) enrolled; needs virt-fw-vars (pip install virt-firmware)")
    p.add_argument("--arch", choices=["x86_64", "aarch64"],
                   help="which image of a multi-arch build (default x86_64)")
    p.add_argument("--memory", type=int, default=1024, metavar="MB")
    p.add_argument("--kvm", action="store_true",
                   help="use KVM and the host's CPU (off by default: TCG works everywhere)")
    p.add_argument("--cpus", type=int, default=1, metavar="N")
    p.add_argument("--ssh-port", type=int, metavar="PORT",
                   help="forward 127.0.0.1:PORT to the guest's SSH port (a virtio NIC on qemu's "
                        "user network is always attached)")
    p.add_argument("--firmware-path", type=Path, metavar="FILE",
                   help="boot with this firmware image instead of the installed OVMF/SeaBIOS")
    p.add_argument("--print", dest="dry_run", action="store_true",
                   help="print the qemu command instead of running it; qemu arguments after "
                        "-- are appended as given")
    p.set_defaults(qemu_args=[])
    p.add_argument("--output-dir", type=Path, default=argparse.SUPPRESS,
                   help="where a profile's <name>/ was written (default: out)")
    _common(p)

    p = sub.add_parser("push", help="push a built OCI image (all platforms, SBOMs) to registries")
    p.add_argument("folder", type=Path, help="a build folder (out/<name>) or an OCI layout")
    p.add_argument("refs", nargs="+", metavar="REF", help="registry/repository[:tag][@digest]")
    _push_flags(p, network=True)
    _common(p)

    p = sub.add_parser("publish", help="build a profile, then push its OCI image to registries")
    p.add_argument("profile", type=Path)
    p.add_argument("refs", nargs="+", metavar="REF", help="registry/repository[:tag][@digest]")
    _build_flags(p)
    _push_flags(p)
    _common(p)

    p = sub.add_parser("schema", help="write the profile JSON schema (for editors)")
    p.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    _common(p)

    p = sub.add_parser("version", help="print the version")
    _common(p)
    return parser


def mirror_url(value: str) -> str:
    """``--mirror``: a URL as given, or a local folder as its ``file://`` URL."""
    if "://" in value:
        scheme = value.split("://", 1)[0]
        if scheme not in ("http", "https", "file"):
            raise UsageError(f"--mirror {value}: expected an http://, https:// or file:// URL, "
                             "or a local folder")
        return value
    folder = Path(value).expanduser()
    if not folder.is_dir():
        raise UsageError(f"--mirror {value}: no such folder (give a URL or a local mirror folder)")
    return folder.resolve().as_uri()


def _context(args: argparse.Namespace, profile_path: Path):  # type: ignore[no-untyped-def]
    from composer.profile import load_profile

    if args.retries < 0 or args.retry_delay < 0:
        raise UsageError("--retries and --retry-delay must not be negative")
    if not args.timeout > 0:
        raise UsageError("--timeout must be a positive number of seconds")
    overrides = {"mirror": mirror_url(args.mirror)} if args.mirror else None
    loaded = load_profile(profile_path, overrides=overrides)
    from composer.context import BuildContext

    ctx = BuildContext.from_environment(loaded, env=os.environ, output_dir=args.output_dir,
                                        cache_dir=args.cache_dir, offline=args.offline,
                                        retries=args.retries, retry_delay=args.retry_delay,
                                        timeout=args.timeout,
                                        allow_host_paths=args.allow_host_paths)
    if getattr(args, "sign", None) is not None:
        from dataclasses import replace

        ctx = replace(ctx, sign_key=args.sign)
    if getattr(args, "no_lock", False) or args.command not in ("build", "fetch", "publish"):
        return ctx
    from composer.stages.lock import with_lock

    return with_lock(ctx, getattr(args, "lock", None))


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, sort_keys=True, indent=2) + "\n")


def cmd_build(args: argparse.Namespace) -> int:
    ctx = _context(args, args.profile)  # a profile error ends here, before the stages load
    from composer.stages.pipeline import build

    result = build(ctx)
    if args.json:
        _print_json({"ok": True, "output_dir": str(result.output_dir),
                     "manifest": json.loads(result.manifest.to_json())})
    else:
        for digest, path in artifact_lines(result.outputs):
            print(f"{digest}  {result.output_dir / path}")
    return 0


def artifact_lines(outputs: Sequence[OutputRecord]) -> list[tuple[str, str]]:
    """One (digest, path) per artifact: files by their sha256, an OCI layout folder once,
    by the image digest users pin (``image@sha256:…``)."""
    lines = []
    for output in sorted(outputs, key=lambda o: o.path):
        if output.format == "oci-index-json" and output.digest:
            lines.append((output.digest, output.path.rsplit("/", 1)[0]))
        elif "/" not in output.path:
            lines.append((f"sha256:{output.sha256}", output.path))
    return lines


def cmd_lock(args: argparse.Namespace) -> int:
    from composer.stages.pipeline import lock_profile

    mode = "update" if args.update else "check" if args.check else "lock"
    report = lock_profile(_context(args, args.profile), args.lock, mode=mode)
    if args.json:
        _print_json({"ok": not report.stale, "lock": str(report.path), "written": report.written,
                     "changes": report.changes})
    else:
        for line in report.changes:
            print(line)
        print(f"{report.verdict}  {report.path}")
    if report.stale:
        from composer.errors import VerificationError

        raise VerificationError(f"{report.path}: stale ({report.summary}); run `alpine-composer "
                                f"lock --update {args.profile}`")
    return 0


def cmd_vendor(args: argparse.Namespace) -> int:
    from composer.stages.vendor import vendor

    report = vendor(_context(args, args.profile), args.dir, args.lock)
    if args.json:
        _print_json({"ok": True, "dir": str(report.folder), "added": list(report.added),
                     "present": len(report.present)})
    else:
        for name in report.added:
            print(f"added  {report.folder / name}")
        print(f"vendored {len(report.added)} new and {len(report.present)} present file(s) "
              f"into {report.folder}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    ctx = _context(args, args.profile)
    from composer.stages.pipeline import fetch

    inputs = fetch(ctx)
    if args.json:
        _print_json([{k: v for k, v in vars(i).items() if v is not None} for i in inputs])
    else:
        for record in inputs:
            print(f"sha256:{record.sha256}  {record.url or record.name}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from composer.verify import rebuild_and_compare, verify_outputs

    if args.rebuild:
        report = rebuild_and_compare(_context(args, args.target),
                                     mirror_given=args.mirror is not None)
        verdict = "rebuild identical"
    else:
        report = verify_outputs(_verify_target(args))
        verdict = "OK"
    signed: list[tuple[str, str]] = []
    if args.signature is not None:
        from composer.verify import verify_signatures

        signed = verify_signatures(report.folder, args.signature)
    if args.json:
        _print_json({"folder": str(report.folder), "checked": list(report.checked), "ok": True,
                     **({"signed_by": {n: f for n, f in signed}} if signed else {})})
    else:
        for name in report.checked:
            print(f"{verdict}  {report.folder / name}")
        for name, signer in signed:
            print(f"signed by {signer}  {report.folder / name}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    """Exit 0 when A and B are identical, 1 when they differ."""
    from composer.diff import diff_paths

    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    report = diff_paths(args.a, args.b)
    if args.json:
        _print_json({"ok": True, **report.to_json()})
    else:
        sys.stdout.write(report.format_report(per_level=args.limit))
    return 0 if report.identical else 1


def _verify_target(args: argparse.Namespace) -> Path:
    """A profile stands for its output folder, ``<output-dir>/<name>``."""
    target: Path = args.target
    if target.suffix in (".yaml", ".yml") and target.is_file():
        from composer.profile import load_profile

        name = load_profile(target).profile.name
        return (args.output_dir or Path("out")) / name
    return target


def cmd_boot(args: argparse.Namespace) -> int:
    import shlex
    import shutil
    import tempfile

    from composer.vm import (
        SecureBootFirmware,
        VmSettings,
        check_memory,
        console_hints,
        find_image,
        qemu_command,
        require_qemu,
        start_vm,
    )
    from composer.vm_secboot import prepare_secure_boot, secure_boot_certificate

    kind = "disk" if args.secure_boot and args.kind is None else args.kind
    image = find_image(_verify_target(args), args.arch, kind)
    disk = image.disk_format is not None
    settings = VmSettings(firmware=args.firmware or ("uefi" if disk else "bios"),
                          medium=args.medium or ("disk" if disk else "cd"), arch=image.arch,
                          memory_mb=args.memory, kvm=args.kvm, cpus=args.cpus,
                          ssh_port=args.ssh_port, firmware_path=args.firmware_path,
                          extra=tuple(args.qemu_args), disk_format=image.disk_format,
                          nvme=args.nvme)
    placeholder = SecureBootFirmware(Path("code"), Path("vars")) if args.secure_boot else None
    # every flag is checked before a file is written
    qemu_command(image.path, dataclasses.replace(settings, secure_boot=placeholder))
    cert = secure_boot_certificate(image) if args.secure_boot else None
    if not args.dry_run:
        require_qemu(image.arch)
    check_memory(image.path, settings)
    with tempfile.TemporaryDirectory(prefix="composer-boot-") as scratch:
        if cert is not None:
            firmware = prepare_secure_boot(cert, Path(scratch))
            if args.dry_run:  # the printed command needs the variables after this exits
                kept = Path(tempfile.mkdtemp(prefix="composer-boot-"))
                firmware = dataclasses.replace(
                    firmware, variables=Path(shutil.move(firmware.variables, kept)))
                print(f"==> Secure Boot variables with {cert.name} enrolled: {kept} (remove it "
                      "when done)", file=sys.stderr, flush=True)
            settings = dataclasses.replace(settings, secure_boot=firmware)
        if args.dry_run:
            print(shlex.join(qemu_command(image.path, settings)))
            return 0
        for hint in console_hints(settings):
            print(f"==> {hint}", file=sys.stderr, flush=True)
        return start_vm(image.path, settings)


def _push(args: argparse.Namespace, folder: Path, refs: Sequence[Any]) -> int:
    from composer.publish.command import push_folder, registry_settings, result_json, result_lines

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    settings = registry_settings(env=os.environ, ca_cert=args.ca_cert, insecure=args.insecure,
                                 chunk_size=args.chunk_size, retries=args.retries,
                                 retry_delay=args.retry_delay, timeout=args.timeout, log=log)
    results = push_folder(folder, refs, settings, cache_dir=args.cache_dir, env=os.environ)
    if args.json:
        _print_json({"ok": True, "pushed": result_json(results)})
    else:
        for line in result_lines(results):
            print(line)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from composer.publish.command import parse_references

    return _push(args, args.folder, parse_references(args.refs))


def cmd_publish(args: argparse.Namespace) -> int:
    from composer.publish.command import parse_references
    from composer.stages.pipeline import build

    refs = parse_references(args.refs)
    ctx = _context(args, args.profile)
    if not any(o.format == "oci" for o in ctx.profile.outputs):
        raise UsageError(f"{ctx.loaded.path}: publish pushes the `oci` output, and the profile has "
                         "none (add `- {format: oci, tag: …}` to outputs)")
    result = build(ctx)
    ctx.log(f"==> built {result.output_dir}")
    return _push(args, result.output_dir, refs)


def cmd_schema(args: argparse.Namespace) -> int:
    from composer.profile.model import Profile

    text = json.dumps(Profile.model_json_schema(), sort_keys=True, indent=2) + "\n"
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    if args.json:
        _print_json({"name": "alpine-composer", "version": __version__})
    else:
        print(f"alpine-composer {__version__}")
    return 0


COMMANDS = {"build": cmd_build, "fetch": cmd_fetch, "lock": cmd_lock, "vendor": cmd_vendor,
            "verify": cmd_verify, "diff": cmd_diff, "boot": cmd_boot, "schema": cmd_schema,
            "version": cmd_version}
COMMANDS.update({"push": cmd_push, "publish": cmd_publish})


def _report_failure(kind: str, message: str, code: int, *, as_json: bool) -> int:
    """One line on stderr; with --json also ``{"ok": false, …}`` on stdout for scripts."""
    print(f"alpine-composer: {kind}{': ' if message else ''}{message}", file=sys.stderr)
    if as_json:
        _print_json({"ok": False, "error": message or kind, "exit": code})
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    as_json = "--json" in argv
    try:
        extra: list[str] = []
        if "--" in argv:
            at = argv.index("--")
            argv, extra = argv[:at], argv[at + 1:]
        args = make_parser().parse_args(argv)
        if extra and args.command != "boot":
            raise UsageError(f"{args.command}: unexpected arguments after -- (only boot takes "
                             "them, for qemu)")
        if extra:
            args.qemu_args = extra
        return COMMANDS[args.command](args)
    except ComposerError as exc:
        if debug:
            traceback.print_exc()
        message = exc.message.splitlines()[0] if exc.message else type(exc).__name__
        return _report_failure("error", message, exc.exit_code, as_json=as_json)
    except KeyboardInterrupt:
        return _report_failure("interrupted", "", EXIT_INTERRUPTED, as_json=as_json)
    except Terminated:
        return _report_failure("terminated", "", EXIT_TERMINATED, as_json=as_json)
    except Exception as exc:  # a bug: say so in one line, traceback only with --debug
        if debug:
            traceback.print_exc()
        return _report_failure("internal error", f"{type(exc).__name__}: {exc} "
                               "(run with --debug for the traceback)", 1, as_json=as_json)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that staging folders and partial files are
    removed on the way out, exactly as for Ctrl-C."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


GC_YOUNG_THRESHOLD = 100_000
"""Allocations between young-generation collections (Python's default is 700)."""


def run() -> NoReturn:
    """The ``alpine-composer`` command: :func:`main`, then exit without a last full GC pass.

    A build's objects live until it ends (modules, classes, the tree's entries), so the
    default collector rescans the same survivors ~100 times during start-up (about 10 ms
    of a 15-package build); a larger young generation collects only when a build has made
    100,000 new objects. Everything still alive at exit is dropped with the process;
    freezing the collector first saves the interpreter a sweep over it (about a tenth of
    a second on a build).
    """
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    # Pydantic plugins are hooks other installed packages register for every model; the
    # profile's validation is ours alone, and finding them reads every distribution's
    # metadata on each run. An explicit setting of the variable is left as it is.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    signal.signal(signal.SIGTERM, _raise_terminated)
    code = main()
    gc.freeze()
    sys.exit(code)

