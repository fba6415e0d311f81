"""The interfaces for people, side by side with what they stand in for.

1. A worker answering invalid args given as `-i KEY=VALUE` versus the same args as an `--input` file; `--help`
   (rendered from the schema) versus `--describe`; `storybridge call` versus `python -m workers.<name>`;
   `storybridge workers` versus a bare interpreter start. Goal: -i costs no more than the file (ratio ~1).
2. `storybridge clean` on a workdir of many runs, versus `rm -rf` of the same attempt directories (the
   floor: deleting is the work). Goal: within a small factor of `rm -rf`, dry run cheaper than the real one.

    python bench/front_door.py [--runs 7] [--runs-in-workdir 200] [--attempts-per-run 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reject_invalid_args import REPO, wall_times

ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def median_s(argv: list[str], runs: int, code: int) -> float:
    wall_times(argv, 1, code)  # warm the page cache
    return statistics.median(wall_times(argv, runs, code))


def command_line_cases(tmp: Path, runs: int) -> None:
    bad = {"output_dir": str(tmp / "out"), "audio_path": "x.wav", "model": "tiny.en", "beam_size": 99}
    (tmp / "bad.json").write_text(json.dumps(bad))
    as_i = ["-i", "audio_path=x.wav", "-i", "model=tiny.en", "-i", "beam_size=99", "-o", str(tmp / "out")]
    worker, front = [sys.executable, "-m", "workers.whisper"], [sys.executable, "-m", "bridge"]
    pairs = [  # (case, argv, its exit code), (what it stands in for, argv, its exit code)
        (("invalid args: -i KEY=VALUE", [*worker, *as_i], 2),
         ("invalid args: --input file", [*worker, "--input", str(tmp / "bad.json")], 2)),
        (("--help (from the schema)", [*worker, "--help"], 0), ("--describe", [*worker, "--describe"], 0)),
        (("storybridge call whisper -i", [*front, "call", "whisper", *as_i], 2),
         ("python -m workers.whisper -i", [*worker, *as_i], 2)),
        (("storybridge workers", [*front, "workers"], 0), ("python -c pass", [sys.executable, "-c", "pass"], 0)),
    ]
    print(f"{'case':<32} {'median_s':>9}   {'versus':<32} {'median_s':>9}  ratio   ({runs} runs each)")
    for (name, argv, code), (other_name, other, other_code) in pairs:
        a, b = median_s(argv, runs, code), median_s(other, runs, other_code)
        print(f"{name:<32} {a:>9.3f}   {other_name:<32} {b:>9.3f}  x{a / b:.2f}")


def fill_workdir(root: Path, runs: int, attempts: int) -> None:
    """A workdir as many runs leave it: state rows, attempt directories (args + stderr), events."""
    sys.path.insert(0, str(REPO))
    from bridge.state import StateDB
    from bridge.workdir import prepare

    wd = prepare(root)
    state = StateDB(wd.state_db, wd.results)
    with open(wd.events, "w", encoding="utf-8") as events:
        for r in range(runs):
            run_id = f"run{r:05d}"
            state.start_run(run_id, "m.json", {})
            for a in range(attempts):
                tag = f"s{a}-1-{r:05d}{a:03d}"
                state.start_attempt(run_id, f"s{a}", 1, "k", str(wd.staging / tag))
                (wd.attempts / tag).mkdir()
                (wd.attempts / tag / "args.json").write_text("{}" * 200)
                (wd.attempts / tag / "stderr.log").write_text("log line\n" * 200)
                for n in range(20):
                    events.write(json.dumps({"event": "progress", "ts": time.time(), "run_id": run_id, "n": n}) + "\n")
            state.end_run(run_id, "ok", 0)
    state.close()


def clean_case(tmp: Path, runs: int, attempts: int) -> None:
    root = tmp / "work"
    fill_workdir(root, runs, attempts)
    copy = tmp / "copy"
    shutil.copytree(root / ".bridge" / "attempts", copy)
    front = [sys.executable, "-m", "bridge", "clean", str(root), "--json"]
    t0 = time.perf_counter()
    dry = json.loads(subprocess.run([*front, "--dry-run"], capture_output=True, env=ENV, check=True).stdout)
    dry_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    done = json.loads(subprocess.run(front, capture_output=True, env=ENV, check=True).stdout)
    clean_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(["rm", "-rf", str(copy)], check=True)
    rm_s = time.perf_counter() - t0
    left = len(os.listdir(root / ".bridge" / "attempts"))
    print(f"\nworkdir: {runs} runs x {attempts} attempts ({runs * attempts} attempt dirs), keep-last 1")
    print(f"{'clean --dry-run':<32} {dry_s:>9.3f}   entries {len(dry['removed'])}, would free {dry['bytes_freed']} bytes")
    print(f"{'clean':<32} {clean_s:>9.3f}   freed {done['bytes_freed']} bytes, {left} attempt dirs left")
    print(f"{'rm -rf (same attempt dirs)':<32} {rm_s:>9.3f}   clean/rm x{clean_s / rm_s:.1f}, dry/clean x{dry_s / clean_s:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--runs-in-workdir", type=int, default=200)
    parser.add_argument("--attempts-per-run", type=int, default=5)
    opts = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        command_line_cases(tmp, opts.runs)
        clean_case(tmp, opts.runs_in_workdir, opts.attempts_per_run)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
