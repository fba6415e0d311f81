"""Timing a worker as a host sees it, shared by the warm-versus-cold benchmarks (bench/*_warm.py)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def one_shot(worker: str, args: dict, tmp: Path, repeat: int) -> float:
    """Median wall time of `python -m workers.<worker> --input args.json`: start, imports, load, run."""
    path = tmp / "args.json"
    path.write_text(json.dumps(args))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", f"workers.{worker}", "--input", str(path)], cwd=REPO,
                              capture_output=True)
        times.append(time.perf_counter() - t0)
        assert proc.returncode == 0, proc.stdout[-2000:]
    return statistics.median(times)


def warm(worker: str, args: dict, repeat: int) -> tuple[float, dict]:
    """Median wall time of a request to one `--serve` process after the first (which loads the model)."""
    proc = subprocess.Popen([sys.executable, "-m", f"workers.{worker}", "--serve"], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    proc.stdout.readline()
    times, answer = [], {}
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        proc.stdin.write(json.dumps({"id": i, "args": args}).encode() + b"\n")
        proc.stdin.flush()
        answer = json.loads(proc.stdout.readline())
        times.append(time.perf_counter() - t0)
        assert answer["success"], answer["error"]
    proc.stdin.close()
    proc.wait()
    return statistics.median(times[1:]), answer


def print_comparison(title: str, direct_label: str, a: float, b: float, c: float, metrics: dict,
                     goal: float = 1.10) -> None:
    """The three timings side by side and their ratios: (a) in-process, (b) one-shot cold, (c) warm."""
    print(title)
    print(f"(a) {direct_label:<30} {a:7.3f} s")
    print(f"(b) {'worker one-shot cold':<30} {b:7.3f} s")
    print(f"(c) {'worker warm':<30} {c:7.3f} s   (run_s {metrics['run_s']}, model_loads {metrics['model_loads']})")
    print(f"c/a = {c / a:.3f}  (goal <= {goal:.2f}: {'met' if c / a <= goal else 'MISSED'})")
    print(f"b/c = {b / c:.1f}")
