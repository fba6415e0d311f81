"""How fast does a worker reject an invalid args file, and answer --describe? (Goals: < 0.5 s and < 0.3 s.)

Side by side in one run: a bare interpreter start, the fixture worker, and every real worker,
each answering an args file with a wrong type and an unknown field, then `--describe` (no model library
imported). Prints median/max wall time.

    python bench/reject_invalid_args.py [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def wall_times(argv: list[str], runs: int, expect_code: int | None) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, cwd=REPO)
        times.append(time.perf_counter() - t0)
        if expect_code is not None and proc.returncode != expect_code:
            raise SystemExit(f"{argv}: exit {proc.returncode}, expected {expect_code}\n{proc.stdout!r}\n{proc.stderr[-2000:]!r}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    opts = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    bad = tmp / "bad.json"
    bad.write_text(json.dumps({"output_dir": str(tmp / "out"), "audio_path": 42, "model": "tiny.en",
                               "beam_size": "five", "no_such_field": True}))
    cases = {
        "python -c pass (interpreter start)": ([sys.executable, "-c", "pass"], 0),
        "fixture worker, invalid args": ([sys.executable, "tests/fixtures/fixture_worker.py", "--input", str(bad)], 2),
    }
    for name in ("whisper", "sdxl", "ltx", "vision"):
        if (REPO / "workers" / name / "__main__.py").exists():
            cases[f"workers.{name}, invalid args"] = ([sys.executable, "-m", f"workers.{name}", "--input", str(bad)], 2)
            cases[f"workers.{name}, --describe"] = ([sys.executable, "-m", f"workers.{name}", "--describe"], 0)
    print(f"{'case':<40} {'median_s':>9} {'max_s':>7}   ({opts.runs} runs each)")
    baseline = None
    for name, (argv, code) in cases.items():
        wall_times(argv, 1, code)  # warm the page cache
        times = wall_times(argv, opts.runs, code)
        median = statistics.median(times)
        baseline = baseline or median
        print(f"{name:<40} {median:>9.3f} {max(times):>7.3f}   x{median / baseline:.1f} of interpreter start")


if __name__ == "__main__":
    main()
