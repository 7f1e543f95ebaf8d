"""The CLI in a fresh process, with what it cost: peak resident memory and CPU time.

``getrusage``'s ``ru_maxrss`` survives ``execve`` and so counts the pytest process that
spawned the CLI; resetting the high-water mark (``clear_refs`` 5) and reading ``VmHWM``
does not. CPU time (user + system of the child) does not grow when the machine is
busy, so it bounds work where wall time would be flaky. With ``COMPOSER_MEASURE_LOG``
set to a file, every run appends its cost and last stderr line there (the figures in
README's security notes come from that log).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HANG_GUARD = 120
"""Seconds after which a run counts as hung (a guard, not a timing assertion)."""

_RUNNER = """\
import sys
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
from composer.cli import main
try:
    code = main()
finally:
    with open("/proc/self/status") as fh:
        peak = next(line.split()[1] for line in fh if line.startswith("VmHWM:"))
    sys.stderr.write(f"\\nmaxrss-kib={peak}\\n")
sys.exit(code)
"""


@dataclass(frozen=True)
class Measured:
    """One CLI run: exit code, stdout, stderr (without the memory line) and its cost."""

    code: int
    stdout: str
    stderr: str
    rss_kib: int
    cpu_seconds: float
    wall_seconds: float


def run_measured(*args: str | os.PathLike[str], cwd: Path | None = None) -> Measured:
    """``python -m composer ARGS`` in a fresh process, measured."""
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    env["PYTHONPATH"] = os.fspath(REPO)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _RUNNER, *map(os.fspath, args)], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=HANG_GUARD,
                          check=False)
    wall = time.monotonic() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = proc.stderr.splitlines()
    rss = [int(line.split("=", 1)[1]) for line in lines if line.startswith("maxrss-kib=")]
    assert len(rss) == 1, proc.stderr
    stderr = "\n".join(line for line in lines if not line.startswith("maxrss-kib="))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    log = os.environ.get("COMPOSER_MEASURE_LOG")
    if log:
        last = (stderr.strip().splitlines() or [""])[-1]
        with open(log, "a") as fh:
            fh.write(f"{os.environ.get('PYTEST_CURRENT_TEST', '?').split(' ')[0]}: exit "
                     f"{proc.returncode}, {rss[0] // 1024} MB, {cpu:.2f} s CPU, {wall:.2f} s "
                     f"| {last[:160]}\n")
    return Measured(proc.returncode, proc.stdout, stderr, rss[0], cpu, wall)
