"""Command line: argv → BuildContext → pipeline; ComposerError → one line + exit code.

Exit codes: 0 ok, 1 other error, 2 bad usage or profile (or a feature not available),
3 download failed, 4 verification failed (signature, checksum, outputs differ),
5 malformed or unsafe archive/package, 6 packages cannot be resolved or installed,
130 interrupted.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from composer import __version__
from composer.errors import ComposerError, UsageError
from composer.manifest import OutputRecord

EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"{self.prog}: {message}")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def _build_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mirror", help="override the profile's mirror (http://, https://, file://)")
    parser.add_argument("--output-dir", type=Path, help="where <name>/ is written (default: out)")
    parser.add_argument("--cache-dir", type=Path,
                        help="download cache (default: $XDG_CACHE_HOME/alpine-composer)")
    parser.add_argument("--offline", action="store_true",
                        help="use only the cache; fail naming anything missing")
    parser.add_argument("--retries", type=int, default=4, metavar="N",
                        help="extra attempts after a 5xx, reset or short read (default 4)")
    parser.add_argument("--retry-delay", type=float, default=0.5, metavar="SECONDS",
                        help="first wait between attempts, doubled each time (default 0.5)")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="alpine-composer",
                     description="Build reproducible Alpine Linux root filesystems and images.")
    parser.add_argument("--version", action="version", version=f"alpine-composer {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("build", help="build every output of a profile into <output-dir>/<name>/")
    p.add_argument("profile", type=Path)
    _build_flags(p)
    _common(p)

    p = sub.add_parser("fetch", help="download and verify a profile's inputs only")
    p.add_argument("profile", type=Path)
    _build_flags(p)
    _common(p)

    p = sub.add_parser("verify", help="check outputs against SHA256SUMS/manifest.json, or rebuild")
    p.add_argument("target", type=Path,
                   help="an output folder or artifact; with --rebuild, a profile")
    p.add_argument("--rebuild", action="store_true",
                   help="build the profile again and compare byte for byte with its published outputs")
    _build_flags(p)
    _common(p)

    p = sub.add_parser("schema", help="write the profile JSON schema (for editors)")
    p.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    _common(p)

    p = sub.add_parser("version", help="print the version")
    _common(p)
    return parser


def _context(args: argparse.Namespace, profile_path: Path):  # type: ignore[no-untyped-def]
    from composer.context import BuildContext
    from composer.profile import load_profile

    overrides = {"mirror": args.mirror} if args.mirror else None
    loaded = load_profile(profile_path, overrides=overrides)
    if args.retries < 0 or args.retry_delay < 0:
        raise UsageError("--retries and --retry-delay must not be negative")
    return BuildContext.from_environment(loaded, env=os.environ, output_dir=args.output_dir,
                                         cache_dir=args.cache_dir, offline=args.offline,
                                         retries=args.retries, retry_delay=args.retry_delay)


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, sort_keys=True, indent=2) + "\n")


def cmd_build(args: argparse.Namespace) -> int:
    from composer.build.pipeline import build

    result = build(_context(args, args.profile))
    if args.json:
        sys.stdout.buffer.write(result.manifest.to_json())
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


def cmd_fetch(args: argparse.Namespace) -> int:
    from composer.build.pipeline import fetch

    inputs = fetch(_context(args, args.profile))
    if args.json:
        _print_json([{k: v for k, v in vars(i).items() if v is not None} for i in inputs])
    else:
        for record in inputs:
            print(f"sha256:{record.sha256}  {record.url or record.name}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from composer.verify import rebuild_and_compare, verify_outputs

    if args.rebuild:
        report = rebuild_and_compare(_context(args, args.target))
        verdict = "rebuild identical"
    else:
        report = verify_outputs(args.target)
        verdict = "OK"
    if args.json:
        _print_json({"folder": str(report.folder), "checked": list(report.checked), "ok": True})
    else:
        for name in report.checked:
            print(f"{verdict}  {report.folder / name}")
    return 0


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


COMMANDS = {"build": cmd_build, "fetch": cmd_fetch, "verify": cmd_verify, "schema": cmd_schema,
            "version": cmd_version}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = make_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except ComposerError as exc:
        if debug:
            traceback.print_exc()
        message = exc.message.splitlines()[0] if exc.message else type(exc).__name__
        print(f"alpine-composer: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("alpine-composer: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: say so in one line, traceback only with --debug
        if debug:
            traceback.print_exc()
        print(f"alpine-composer: internal error: {type(exc).__name__}: {exc} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1


def run() -> NoReturn:
    """The ``alpine-composer`` command: :func:`main`, then exit without a last full GC pass.

    Everything still alive at exit is dropped with the process; freezing the collector
    first saves the interpreter a sweep over it (about a tenth of a second on a build).
    """
    code = main()
    gc.freeze()
    sys.exit(code)

