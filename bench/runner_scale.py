"""How the reference runner scales (not a test; prints figures).

    python bench/runner_scale.py validate [--sizes 1000 2500 5000 10000]
        wall time of `python -m bridge validate` (a subprocess, interpreter start included) on a chain
        manifest (every step references the one before) and on a flat one (independent steps)
    python bench/runner_scale.py big-answer [--mb 50]
        size of .bridge/state.db (+ WAL) after one step whose worker answers a result of that many MB
    python bench/runner_scale.py resume [--steps 1000]
        wall time of a first run and of the resume (every step a cache hit) of a chain manifest

The worker is tests/fixtures/bare_worker.py (starts in milliseconds, so the runner's own cost shows).
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
BARE = str(REPO / "tests" / "fixtures" / "bare_worker.py")


def manifest(steps: list[dict], name: str = "bench") -> dict:
    return {"version": 1, "name": name, "defaults": {"retry": {"max_attempts": 1}},
            "workers": {"bare": [sys.executable, BARE]}, "steps": steps}


def chain(n: int) -> list[dict]:
    steps = [{"id": "s0", "worker": "bare", "args": {"outputs": {"o": "0"}}}]
    for i in range(1, n):
        steps.append({"id": f"s{i}", "worker": "bare",
                      "args": {"outputs": {"o": str(i)}, "echo": f"${{steps.s{i - 1}.result.files.o}}"}})
    return steps


def flat(n: int) -> list[dict]:
    return [{"id": f"s{i}", "worker": "bare", "args": {"outputs": {"o": str(i)}}} for i in range(n)]


def timed_cli(argv: list[str], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"{argv}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return statistics.median(times)


def bench_validate(sizes: list[int], tmp: Path) -> None:
    base = timed_cli([sys.executable, "-c", "import bridge.manifest"])
    print(f"interpreter start + import bridge.manifest: {base:.2f} s")
    print(f"{'steps':>6}  {'chain s':>8}  {'flat s':>8}")
    for n in sizes:
        row = []
        for shape in (chain, flat):
            path = tmp / f"{shape.__name__}{n}.json"
            path.write_text(json.dumps(manifest(shape(n))), encoding="utf-8")
            row.append(timed_cli([sys.executable, "-m", "bridge", "validate", str(path)]))
        print(f"{n:>6}  {row[0]:>8.2f}  {row[1]:>8.2f}")


def bench_big_answer(mb: int, tmp: Path) -> None:
    doc = manifest([{"id": "big", "worker": "bare", "args": {"mode": "big", "blob_bytes": mb * 1_000_000}}])
    path = tmp / "big.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    wall = timed_cli([sys.executable, "-m", "bridge", "run", str(path)], repeat=1)
    bridge_dir = tmp / "bench.work" / ".bridge"
    files = {p.name: p.stat().st_size for p in bridge_dir.rglob("*") if p.is_file() and "state.db" in p.name}
    print(f"answer of {mb} MB: run {wall:.2f} s; state.db files {files}; total {sum(files.values()) / 1e6:.2f} MB")


def bench_resume(n: int, tmp: Path) -> None:
    path = tmp / "resume.json"
    path.write_text(json.dumps(manifest(chain(n))), encoding="utf-8")
    first = timed_cli([sys.executable, "-m", "bridge", "run", str(path)], repeat=1)
    resume = timed_cli([sys.executable, "-m", "bridge", "run", str(path)], repeat=3)
    print(f"{n} steps: first run {first:.1f} s; resume (all cache hits, median of 3) {resume:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("validate").add_argument("--sizes", type=int, nargs="+", default=[1000, 2500, 5000, 10000])
    sub.add_parser("big-answer").add_argument("--mb", type=int, default=50)
    sub.add_parser("resume").add_argument("--steps", type=int, default=1000)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if opts.what == "validate":
            bench_validate(opts.sizes, Path(tmp))
        elif opts.what == "big-answer":
            bench_big_answer(opts.mb, Path(tmp))
        else:
            bench_resume(opts.steps, Path(tmp))


if __name__ == "__main__":
    main()
