"""The Ray executor against the local one (not a test).

    python bench/ray_executor.py [--steps 200] [--items 8] [--item-cpu-s 2]

Printed in one run, on a Ray cluster this script starts on this machine (`ray.cluster_utils.Cluster`):
  1. per-step overhead of a 200-step no-op DAG (independent steps, `--jobs 2`): the local executor vs the Ray
     executor on a 1-node cluster (2 CPUs), in data mode `ship` and `shared`; runner time in-process (the
     interpreter start and the Ray connection left out), per step and the ratio;
  2. 8 CPU-bound items (each burns 2 s of CPU) through the Ray executor: a 1-node cluster with 1 CPU, then the
     same with a second node of 1 CPU added; the walls and the speedup;
  3. warm actors: 8 items of a warm-capable worker whose model load takes 2 s and each job 0.2 s
     (tests/fixtures/pool_worker.py), `--jobs 2` on a 1-node cluster with 2 CPUs, with warm actors (the default)
     and with `--no-warm` (one process per attempt); the walls, the ratio and the model loads counted.
The no-op worker is a /bin/sh script; the CPU-bound one a few lines of Python.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from runner_overhead import NOOP_SH, noop_manifest  # noqa: E402

BURN_PY = """import json, sys, time
if "--describe" in sys.argv:
    print(json.dumps({"name": "burn", "version": "1", "contract_version": "1.0.0", "devices": ["cpu"]}))
    sys.exit(0)
args = json.load(open(sys.argv[sys.argv.index("--input") + 1]))
end = time.process_time() + args["cpu_s"]
while time.process_time() < end:
    pass
print(json.dumps({"contract_version": "1.0.0", "worker": "burn", "worker_version": "1", "success": True,
                  "result": {"item": args["item"]}, "error": None, "outputs": [],
                  "metrics": {"load_s": 0, "run_s": args["cpu_s"], "peak_rss_mb": 0}, "warnings": []}))
"""


def run_in_process(manifest: Path, **opts) -> float:
    from bridge.manifest import load
    from bridge.runner import Runner, RunOptions
    from bridge.schemas import SchemaStore

    store = SchemaStore(REPO / "schemas")
    runner = Runner(load(manifest, store), RunOptions(quiet=True, **opts), schemas=store, console=io.StringIO())
    t0 = time.perf_counter()
    code = runner.run()
    wall = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"{manifest}: exit {code}")
    return wall


def burn_manifest(tmp: Path, name: str, items: int, cpu_s: float) -> Path:
    (tmp / "burn.py").write_text(BURN_PY, encoding="utf-8")
    doc = {"version": 1, "name": name, "defaults": {"retry": {"max_attempts": 1}},
           "workers": {"burn": [sys.executable, str(tmp / "burn.py")]},
           "steps": [{"id": "list", "worker": "burn", "args": {"cpu_s": 0, "item": list(range(items))}},
                     {"id": "burn", "worker": "burn", "foreach": "${steps.list.result.item}",
                      "args": {"cpu_s": cpu_s, "item": "${item}"}}]}
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def overhead(tmp: Path, steps: int) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from bridge.ray_executor import RayOptions

    (tmp / "noop.sh").write_text(NOOP_SH, encoding="utf-8")
    local = run_in_process(noop_manifest(tmp, steps, False, "local"), jobs=2)
    cluster = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 2})
    try:
        walls = {data: run_in_process(noop_manifest(tmp, steps, False, f"ray_{data}"), jobs=2, executor="ray",
                                      ray=RayOptions(data=data)) for data in ("ship", "shared")}
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(f"1. {steps} independent no-op steps, --jobs 2 (runner in-process)")
    print(f"   local executor        {local:6.2f} s  {local / steps * 1000:6.1f} ms/step")
    for data, wall in walls.items():
        print(f"   ray executor ({data:<6}) {wall:6.2f} s  {wall / steps * 1000:6.1f} ms/step  "
              f"{wall / local:4.1f}x the local per-step cost")


def speedup(tmp: Path, items: int, cpu_s: float) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from bridge.ray_executor import RayOptions

    cluster = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1})
    try:
        one = run_in_process(burn_manifest(tmp, "one", items, cpu_s), jobs=items, executor="ray", ray=RayOptions())
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        two = run_in_process(burn_manifest(tmp, "two", items, cpu_s), jobs=items, executor="ray", ray=RayOptions())
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(f"2. {items} CPU-bound items of {cpu_s:g} s CPU each (ray executor, nodes of 1 CPU on this machine, "
          f"{os.cpu_count()} cores)")
    print(f"   1 node  {one:6.2f} s\n   2 nodes {two:6.2f} s  speedup {one / two:4.2f}x")


def warm(tmp: Path, items: int, load_s: float) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from bridge.ray_executor import RayOptions

    pool = str(REPO / "tests" / "fixtures" / "pool_worker.py")
    walls, loads = {}, {}
    cluster = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 2})
    try:
        for mode in ("warm", "no-warm"):
            log = tmp / f"loads-{mode}.log"
            doc = {"version": 1, "name": f"warm_{mode}", "workers": {"pool": [sys.executable, pool]},
                   "steps": [{"id": "list", "worker": "pool", "args": {"items": list(range(items))}},
                             {"id": "each", "worker": "pool", "foreach": "${steps.list.result.items}",
                              "args": {"tag": "${item}", "model": "big", "load_s": load_s, "sleep_s": 0.2,
                                       "loads_file": str(log)}, "ignore_input_files": ["loads_file"]}]}
            path = tmp / f"warm_{mode}.json"
            path.write_text(json.dumps(doc), encoding="utf-8")
            walls[mode] = run_in_process(path, jobs=2, executor="ray", warm=mode == "warm",
                                         ray=RayOptions(data="shared"))
            loads[mode] = sum(line.endswith(" big") for line in log.read_text("utf-8").splitlines())
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(f"3. {items} items, a {load_s:g} s model load and a 0.2 s job each, --jobs 2 (ray executor, 1 node of "
          "2 CPUs)")
    print(f"   warm actors {walls['warm']:6.2f} s  {loads['warm']} model loads\n"
          f"   --no-warm   {walls['no-warm']:6.2f} s  {loads['no-warm']} model loads  "
          f"warm is {walls['no-warm'] / walls['warm']:4.2f}x faster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--item-cpu-s", type=float, default=2.0)
    parser.add_argument("--load-s", type=float, default=2.0)
    parser.add_argument("--only", choices=["overhead", "speedup", "warm"])
    opts = parser.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])  # the nodes' workers
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
        if opts.only in (None, "overhead"):
            overhead(Path(tmp), opts.steps)
        if opts.only in (None, "speedup"):
            speedup(Path(tmp), opts.items, opts.item_cpu_s)
        if opts.only in (None, "warm"):
            warm(Path(tmp), opts.items, opts.load_s)


if __name__ == "__main__":
    main()
