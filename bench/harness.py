"""Whole-process timing for `make bench`: composer and its baseline in alternating rounds.

Every figure is a whole process, started and reaped here: wall seconds from
``time.perf_counter`` around it and its peak RSS from ``os.wait4``. The two commands take
turns (A B A B …) after one warm-up each, so a machine that speeds up or slows down
mid-run skews neither, and each round gives one ratio A/B; rows print the min, median and
max of those ratios. The machine is shared: quote medians.

``BENCH_SOURCE=/path/to/checkout`` runs composer from another checkout (for before/after
tables); by default, this one.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path(os.environ.get("BENCH_SOURCE", ROOT)).resolve()
RUNS = int(os.environ.get("BENCH_RUNS", "7"))


def composer_command(*args: str | os.PathLike[str]) -> list[str]:
    """``alpine-composer ARGS`` as a user runs it (``python -m composer`` of SOURCE)."""
    return [sys.executable, "-m", "composer", *map(os.fspath, args)]


def composer_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "PYTHONPATH")}
    env["PYTHONPATH"] = os.fspath(SOURCE)
    return env


def compile_source() -> None:
    """Bytecode as an installed package has it: an editable checkout run with
    PYTHONDONTWRITEBYTECODE would otherwise compile every module on every start."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.fspath(SOURCE / "composer")],
                   check=True, stdout=subprocess.DEVNULL)


@dataclass(frozen=True)
class Run:
    wall: float
    rss_mib: float


def measure(argv: Sequence[str], *, env: dict[str, str] | None = None,
            expect: int = 0) -> Run:
    """One child process: wall seconds and peak RSS; a wrong exit status stops the bench."""
    start = time.perf_counter()
    proc = subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != expect:
        raise SystemExit(f"{' '.join(argv[:6])} … exited {code}, expected {expect}:\n"
                         f"{err.decode(errors='replace')[-3000:]}")
    return Run(wall, usage.ru_maxrss / 1024)


@dataclass(frozen=True)
class Paired:
    ours: tuple[Run, ...]
    theirs: tuple[Run, ...]

    @property
    def ratios(self) -> list[float]:
        return [a.wall / b.wall for a, b in zip(self.ours, self.theirs, strict=True)]

    @property
    def differences(self) -> list[float]:
        return [a.wall - b.wall for a, b in zip(self.ours, self.theirs, strict=True)]

    def median(self, side: str) -> float:
        return statistics.median(r.wall for r in getattr(self, side))

    def peak_rss(self) -> float:
        return max(r.rss_mib for r in self.ours)


def paired(ours: Sequence[str], theirs: Sequence[str], *, ours_env: dict[str, str] | None = None,
           expect: int = 0, before_ours: Callable[[], None] | None = None,
           before_theirs: Callable[[], None] | None = None, runs: int = RUNS) -> Paired:
    """``ours`` and ``theirs`` in alternating rounds after one warm-up each; the ``before``
    hooks (emptying a cache, say) run untimed before every run of their side."""
    a: list[Run] = []
    b: list[Run] = []
    for round_ in range(runs + 1):
        if before_ours:
            before_ours()
        run_a = measure(ours, env=ours_env, expect=expect)
        if before_theirs:
            before_theirs()
        run_b = measure(theirs)
        if round_:
            a.append(run_a)
            b.append(run_b)
    return Paired(tuple(a), tuple(b))


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """min / median / max."""
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values),
                                               max(values)))


HEADER = ("| work (whole processes) | alpine-composer | baseline | ratio min / median / max | "
          "target | met |\n|---|---|---|---|---|---|")


def ratio_row(label: str, result: Paired, baseline: str, target: float, *,
              rss_limit: float | None = None) -> str:
    """A table row; the target is on the median ratio (and on peak RSS when given)."""
    ratio = statistics.median(result.ratios)
    met = ratio <= target and (rss_limit is None or result.peak_rss() <= rss_limit)
    rss = f", peak RSS {result.peak_rss():.0f} MB" if rss_limit is not None else ""
    limit = f", peak RSS ≤ {rss_limit:.0f} MB" if rss_limit is not None else ""
    return (f"| {label} | {result.median('ours'):.3f} s{rss} | {result.median('theirs'):.3f} s "
            f"({baseline}) | {spread(result.ratios)} | ≤ {target:g}×{limit} | "
            f"{'yes' if met else 'NO'} |")


def floor_row(label: str, result: Paired, baseline: str, allowance: float) -> str:
    """A row whose target is the baseline plus ``allowance`` seconds (median difference)."""
    extra = statistics.median(result.differences)
    return (f"| {label} | {result.median('ours'):.3f} s | {result.median('theirs'):.3f} s "
            f"({baseline}) | +{spread(result.differences, '{:.3f}')} s | floor + "
            f"{allowance:g} s | {'yes' if extra <= allowance else 'NO'} |")
