"""The runner's own cost per step, side by side with Snakemake, and what the warm pool saves (not a test).

    python bench/runner_overhead.py [--steps 200] [--resume-steps 1000] [--jobs N] [--items 20] [--no-snakemake]

Printed in one run:
  1. a 200-step no-op DAG, independent and chained, through `python -m bridge run` and through Snakemake
     (installed by this script into a throwaway venv; skipped with a note when it cannot be installed):
     wall time, per-step overhead, and the ratio; and the runner again with a warm no-op worker;
  2. the resume of a fully committed 1,000-step manifest (every step a cache hit): the CLI's wall time and
     the runner's own time in-process (interpreter start and imports left out);
  3. 20 items through a worker whose model load takes 1 s: one process per item (`--no-warm`) vs the pool.
Goals (docs/runner.md): per-step overhead >= 10x lower than Snakemake on both shapes; resume <= 0.5 s.

The no-op worker is a /bin/sh script that answers one fixed envelope, so the figures are the tools' own cost.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POOL = str(REPO / "tests" / "fixtures" / "pool_worker.py")
ENVELOPE = json.dumps({"contract_version": "1.0.0", "worker": "noop", "worker_version": "1", "success": True,
                       "result": {}, "error": None, "outputs": [],
                       "metrics": {"load_s": 0, "run_s": 0, "peak_rss_mb": 0}, "warnings": []})
NOOP_SH = f"""#!/bin/sh
if [ "$1" = "--describe" ]; then
  echo '{{"name": "noop", "version": "1", "contract_version": "1.0.0", "devices": ["cpu"]}}'
else
  echo '{ENVELOPE}'
fi
"""


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def noop_manifest(tmp: Path, n: int, chained: bool, name: str, warm: bool = False) -> Path:
    """`noop`: the /bin/sh worker (a process per step); `warm`: tests/fixtures/pool_worker.py, served warm."""
    worker = "pool" if warm else "noop"
    steps = [{"id": f"s{i}", "worker": worker, **({"needs": [f"s{i - 1}"]} if chained and i else {})}
             for i in range(n)]
    argv = [sys.executable, POOL] if warm else ["/bin/sh", str(tmp / "noop.sh")]
    doc = {"version": 1, "name": name, "defaults": {"retry": {"max_attempts": 1}},
           "workers": {worker: argv}, "steps": steps}
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def runner_wall(tmp: Path, n: int, chained: bool, jobs: int, warm: bool = False) -> float:
    path = noop_manifest(tmp, n, chained, f"{'chain' if chained else 'indep'}{n}{'w' if warm else ''}", warm)
    return _run([sys.executable, "-m", "bridge", "run", str(path), "--jobs", str(jobs), "--quiet"], tmp, _env())


SNAKEFILE = """N = {n}
rule all:
    input: expand("indep/{{i}}.done", i=range(N)) if config.get("shape") == "indep" else f"chain/{{N - 1}}.done"
rule indep:
    output: "indep/{{i}}.done"
    shell: "/bin/sh noop.sh --input x > {{output}}"
rule chain0:
    output: "chain/0.done"
    shell: "/bin/sh noop.sh --input x > {{output}}"
rule chain:
    input: lambda w: f"chain/{{int(w.i) - 1}}.done"
    output: "chain/{{i}}.done"
    wildcard_constraints: i="[1-9][0-9]*"
    shell: "/bin/sh noop.sh --input x > {{output}}"
"""


def snakemake_bin(tmp: Path) -> tuple[Path | None, str]:
    """A throwaway venv with snakemake; (None, why) when it cannot be installed (offline, say)."""
    where = tmp / "smk-venv"
    venv.create(where, with_pip=True)
    python = where / "bin" / "python"
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "snakemake"], capture_output=True, text=True)
    if proc.returncode != 0:
        return None, f"pip install snakemake failed: {proc.stderr.strip()[-300:]}"
    return where / "bin" / "snakemake", ""


def snakemake_wall(smk: Path, tmp: Path, n: int, chained: bool, jobs: int) -> float:
    work = tmp / f"smk-{'chain' if chained else 'indep'}"
    work.mkdir()
    (work / "noop.sh").write_text(NOOP_SH, encoding="utf-8")
    (work / "Snakefile").write_text(SNAKEFILE.format(n=n), encoding="utf-8")
    shape = "chain" if chained else "indep"
    return _run([str(smk), "--cores", str(jobs), "--quiet", "all", "--config", f"shape={shape}"], work)


def compare(tmp: Path, n: int, jobs: int, with_snakemake: bool) -> None:
    smk, why = snakemake_bin(tmp) if with_snakemake else (None, "skipped (--no-snakemake)")
    print(f"== {n}-step no-op DAG, --jobs {jobs} (per-step overhead = wall / steps, process start included)")
    print(f"{'shape':<12}{'runner s':>10}{'ms/step':>9}{'snakemake s':>13}{'ms/step':>9}{'ratio':>8}"
          f"{'warm runner s':>15}{'ms/step':>9}{'ratio':>8}")
    for chained in (False, True):
        ours = runner_wall(tmp, n, chained, jobs)
        warm = runner_wall(tmp, n, chained, jobs, warm=True)
        theirs = snakemake_wall(smk, tmp, n, chained, jobs) if smk else None
        cells = [f"{'chain' if chained else 'independent':<12}", f"{ours:>10.2f}", f"{ours / n * 1000:>9.1f}"]
        if theirs is None:
            cells += [f"{'-':>13}", f"{'-':>9}", f"{'-':>8}"]
        else:
            cells += [f"{theirs:>13.2f}", f"{theirs / n * 1000:>9.1f}", f"{theirs / ours:>7.1f}x"]
        cells += [f"{warm:>15.2f}", f"{warm / n * 1000:>9.1f}", f"{theirs / warm:>7.1f}x" if theirs else f"{'-':>8}"]
        print("".join(cells))
    print("warm runner: the same DAG through tests/fixtures/pool_worker.py served warm (no process per step)")
    if smk is None:
        print(f"snakemake: {why}")


def resume(tmp: Path, n: int, jobs: int) -> None:
    from bridge.manifest import load
    from bridge.runner import Runner, RunOptions

    path = noop_manifest(tmp, n, False, f"resume{n}")
    first = _run([sys.executable, "-m", "bridge", "run", str(path), "--jobs", str(jobs), "--quiet"], tmp, _env())
    cli = min(_run([sys.executable, "-m", "bridge", "run", str(path), "--quiet"], tmp, _env()) for _ in range(3))
    inside = []
    for _ in range(3):
        t0 = time.perf_counter()
        code = Runner(load(path), RunOptions(jobs=jobs, quiet=True), console=io.StringIO()).run()
        inside.append(time.perf_counter() - t0)
        assert code == 0
    print(f"== resume of {n} committed steps: first run {first:.1f} s; resume: CLI {cli:.2f} s (best of 3), "
          f"runner in-process {min(inside):.2f} s (best of 3)")


def warm_effect(tmp: Path, items: int) -> None:
    steps = [{"id": "list", "worker": "pool", "args": {"items": list(range(items))}},
             {"id": "each", "worker": "pool", "foreach": "${steps.list.result.items}",
              "args": {"tag": "${item}", "model": "big", "load_s": 1.0}}]
    doc = {"version": 1, "name": "warm", "defaults": {"retry": {"max_attempts": 1}},
           "workers": {"pool": [sys.executable, POOL]}, "steps": steps}
    path = tmp / "warm.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    walls = {}
    for mode in ("--no-warm", None):
        shutil.rmtree(tmp / "warm.work", ignore_errors=True)  # a cold start each time
        argv = [sys.executable, "-m", "bridge", "run", str(path), "--jobs", "1", "--quiet"] + ([mode] if mode else [])
        walls[mode or "warm"] = _run(argv, tmp, _env())
    print(f"== {items} items, model load 1 s, --jobs 1: one process per item {walls['--no-warm']:.1f} s; "
          f"warm pool {walls['warm']:.1f} s ({walls['--no-warm'] / walls['warm']:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--resume-steps", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--no-snakemake", action="store_true")
    opts = parser.parse_args()
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "noop.sh").write_text(NOOP_SH, encoding="utf-8")
        compare(tmp, opts.steps, opts.jobs, not opts.no_snakemake)
        resume(tmp, opts.resume_steps, opts.jobs)
        warm_effect(tmp, opts.items)


if __name__ == "__main__":
    main()
