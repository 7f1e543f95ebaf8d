"""`make bench`: run every benchmark in one go and print their tables (also saved to out/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHES = ["bench_tar.py", "bench_oci.py", "bench_apk.py", "bench_iso.py", "bench_squashfs.py",
           "bench_disk_writers.py", "bench_disk.py"]


def main() -> int:
    sections = []
    for name in BENCHES:
        script = ROOT / "bench" / name
        if not script.exists():
            continue
        print(f"== {name}", flush=True)
        result = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True,
                                text=True)
        text = result.stdout if result.returncode == 0 else (
            f"FAILED (exit {result.returncode})\n{result.stdout}{result.stderr}")
        print(text, flush=True)
        sections.append(f"## {name}\n\n{text}")
    out = ROOT / "out"
    out.mkdir(exist_ok=True)
    (out / "bench.md").write_text("# Benchmarks\n\n" + "\n".join(sections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
