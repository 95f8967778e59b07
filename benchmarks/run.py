"""Run every benchmark (``benchmarks/bench_*.py``) in its own process and print its report.

Each benchmark script measures brainmatch against a named peer in the same run and
prints ratios (e.g. ``speed vs nilearn: 6.1x``).  ``make bench`` calls this file; pass
names to run only some (``python benchmarks/run.py extract``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    """Run the selected benchmarks; return non-zero if any failed."""
    scripts = sorted(HERE.glob("bench_*.py"))
    if argv:
        scripts = [s for s in scripts if any(a in s.stem for a in argv)]
    if not scripts:
        print("no benchmarks found")
        return 0
    failed = []
    for script in scripts:
        print(f"=== {script.stem} ===", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(f"--- {script.stem}: exit {rc}, {time.perf_counter() - start:.1f} s\n", flush=True)
        if rc:
            failed.append(script.stem)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
