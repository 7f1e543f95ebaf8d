"""`make fuzz`: mutate the real Alpine fixtures and feed every parser, with per-case limits.

    python fuzz/run.py [--cases 20000] [--targets a,b] [--workers N] [--timeout 10]
                       [--memory-mib 1024] [--case-memory-mib 512] [--seed 0]

Case ``i`` of a target is reproducible from ``(seed, target, i)`` alone; the first
cases are the target's bombs, fed as they are. Each worker
process runs with RLIMIT_DATA at ``--memory-mib``; the parent kills a worker whose
case runs longer than ``--timeout`` seconds and records a hang. A finding is any
exception other than ComposerError (MemoryError and RecursionError included), a
hang, a crashed worker, or a case whose peak resident memory passed
``--case-memory-mib`` (a MemoryError caught and reworded still shows there); each
one is saved under ``out/fuzz/`` with its input.
Exit status 1 when there is any finding.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import resource
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from composer.errors import ComposerError  # noqa: E402
from fuzz.targets import SHARED, Target, build_targets  # noqa: E402

INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, ord("0"), ord("9"), ord(" "), ord("\n"), ord("="),
               ord("/"), ord(".")]
DIGIT_RUNS = [1, 20, 21, 100, 4301, 20_000]


def mutate(data: bytes, rng: random.Random, seeds: list[bytes], tokens: list[bytes]) -> bytes:
    """One to four random edits of ``data``: flips, digit runs, tokens, cuts, splices."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randint(0, len(out))
        choice = rng.randrange(11)
        if choice == 0 and out:
            out[min(pos, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif choice == 1 and out:
            out[min(pos, len(out) - 1)] = rng.choice(INTERESTING)
        elif choice == 2:
            out[pos:pos] = rng.choice(b"0123456789"[:rng.randint(1, 10)] or b"1") \
                .to_bytes(1, "big") * rng.choice(DIGIT_RUNS)
        elif choice == 3 and tokens:
            out[pos:pos] = rng.choice(tokens)
        elif choice == 4:
            del out[pos:pos + rng.randint(1, 64)]
        elif choice == 5:
            end = min(len(out), pos + rng.randint(1, 512))
            out[pos:pos] = out[pos:end] * rng.randint(1, 8)
        elif choice == 6:
            del out[pos:]
        elif choice == 7:
            other = rng.choice(seeds)
            start = rng.randint(0, len(other))
            out[pos:pos + rng.randint(0, 256)] = other[start:start + rng.randint(1, 512)]
        elif choice == 8:
            out[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif choice == 9:
            out[pos:pos + rng.randint(1, 12)] = str(rng.choice(
                [2**64, 2**63 - 1, 10**30, -1, 99999999999])).encode()
        else:
            out[pos:pos + 1] = rng.choice(["¹", "٣", "\u00a0", "𝟗"]).encode()
        if len(out) > 4 * 1024 * 1024:
            del out[4 * 1024 * 1024:]
    return bytes(out)


def case_input(target: Target, seed: int, index: int) -> bytes:
    if index < len(target.bombs):
        return target.bombs[index]
    rng = random.Random(f"{seed}:{target.name}:{index}")
    data = mutate(rng.choice(target.seeds), rng, target.seeds, target.tokens)
    return target.prepare(data) if target.prepare is not None else data


@dataclass
class Outcome:
    """What happened to a target's cases."""

    cases: int = 0
    findings: list[tuple[int, str]] = field(default_factory=list)
    slowest: float = 0.0


def _peak_mib() -> int:
    """This process's peak resident memory since the last :func:`_reset_peak`."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) // 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def worker(target: Target, seed: int, start: int, stride: int, total: int, memory_mib: int,
           case_mib: int, conn: Connection, progress: Any) -> None:
    limit = memory_mib * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    sys.setrecursionlimit(10_000)
    done = 0
    slowest = 0.0
    for index in range(start, total, stride):
        progress.value = index
        _reset_peak()
        began = time.monotonic()
        try:
            data = case_input(target, seed, index)
            target.run(data)
        except ComposerError as exc:
            if "\n" in str(exc):
                conn.send(("finding", index, f"multi-line error: {exc!r}"))
        except BaseException as exc:  # noqa: BLE001 - any other exception is the finding
            tail = traceback.format_exception(exc)[-3:]
            conn.send(("finding", index, f"{type(exc).__name__}: {str(exc)[:200]} | "
                                         + " ".join(line.strip() for line in tail)[:600]))
        slowest = max(slowest, time.monotonic() - began)
        if (peak := _peak_mib()) > case_mib:
            conn.send(("finding", index, f"memory: the case reached {peak} MiB resident "
                                         f"(more than {case_mib})"))
        done += 1
    conn.send(("done", done, slowest))


@dataclass
class _Worker:
    proc: multiprocessing.process.BaseProcess
    conn: Connection
    progress: Any
    first: int
    last: int
    since: float


def run_target(target: Target, *, cases: int, workers: int, timeout: float, memory_mib: int,
               case_mib: int, seed: int) -> Outcome:
    """Run ``cases`` cases on ``workers`` processes; case ``i`` goes to worker ``i % workers``."""
    ctx = multiprocessing.get_context("fork")
    outcome = Outcome()
    live: dict[int, _Worker] = {}

    def start(slot: int, first: int) -> None:
        parent, child = ctx.Pipe(duplex=False)
        progress = ctx.Value("q", first)
        proc = ctx.Process(target=worker, args=(target, seed, first, workers, cases, memory_mib,
                                                case_mib, child, progress), daemon=True)
        proc.start()
        child.close()
        live[slot] = _Worker(proc, parent, progress, first, first, time.monotonic())

    for slot in range(min(workers, cases)):
        start(slot, slot)
    while live:
        time.sleep(0.05)
        for slot, w in list(live.items()):
            current = int(w.progress.value)
            if current != w.last:
                w.last, w.since = current, time.monotonic()
            finished = False
            while w.conn.poll():
                try:
                    message = w.conn.recv()
                except EOFError:
                    break
                if message[0] == "finding":
                    outcome.findings.append((message[1], message[2]))
                else:
                    outcome.cases += message[1]
                    outcome.slowest = max(outcome.slowest, message[2])
                    finished = True
            if finished:
                w.proc.join()
                del live[slot]
                continue
            hung = time.monotonic() - w.since > timeout
            if w.proc.is_alive() and not hung:
                continue
            if w.proc.is_alive():
                w.proc.kill()
            w.proc.join()
            outcome.findings.append((current, f"hang: case ran longer than {timeout} s" if hung
                                     else f"worker died (exit {w.proc.exitcode})"))
            outcome.cases += (current - w.first) // workers + 1
            del live[slot]
            if current + workers < cases:
                start(slot, current + workers)
    return outcome


def save_findings(target: Target, outcome: Outcome, seed: int, out: Path) -> None:
    for index, message in outcome.findings:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{target.name}-{index}.bin").write_bytes(case_input(target, seed, index))
        (out / f"{target.name}-{index}.txt").write_text(message + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--targets", default="")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--memory-mib", type=int, default=1024)
    parser.add_argument("--case-memory-mib", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"fuzz: {SHARED} is missing: the real Alpine fixtures are the seeds", file=sys.stderr)
        return 2
    out = ROOT / "out" / "fuzz"
    with tempfile.TemporaryDirectory(prefix="composer-fuzz-") as workdir:
        targets = build_targets(Path(workdir))
        wanted = {t for t in args.targets.split(",") if t}
        unknown = wanted - {t.name for t in targets}
        if unknown:
            print(f"fuzz: unknown targets {sorted(unknown)}", file=sys.stderr)
            return 2
        total_findings = 0
        print(f"{'target':<24} {'cases':>7} {'findings':>8} {'slowest':>8} {'time':>7}")
        for target in targets:
            if wanted and target.name not in wanted:
                continue
            began = time.monotonic()
            outcome = run_target(target, cases=args.cases, workers=args.workers,
                                 timeout=args.timeout, memory_mib=args.memory_mib,
                                 case_mib=args.case_memory_mib, seed=args.seed)
            save_findings(target, outcome, args.seed, out)
            total_findings += len(outcome.findings)
            print(f"{target.name:<24} {outcome.cases:>7} {len(outcome.findings):>8} "
                  f"{outcome.slowest:>7.2f}s {time.monotonic() - began:>6.0f}s", flush=True)
            for index, message in outcome.findings[:5]:
                print(f"    case {index}: {message}", flush=True)
    if total_findings:
        print(f"fuzz: {total_findings} finding(s); inputs saved in {out}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
