"""The story pipeline two ways, same story, same tiny models, same seeds, one run:

(a) this runner: `python -m bridge run examples/story/manifest.json` (concurrency, streaming, warm pool);
(b) the way the seeds' origin did it: every attempt (a) made, replayed as one cold worker subprocess
    (`python -m workers.X --input args.json`), strictly one after another, no model reuse. The args are the
    ones (a) recorded, with its workdir swapped for (b)'s, so (b) reads its own keyframes and clips.

Prints wall times, model loads and the ratio, and checks that both made identical keyframes (pixels) and clips
(decoded frames). Usage: python bench/story_vs_naive.py [--models DIR] [--param NAME=VALUE ...] [--jobs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STORY = REPO / "examples" / "story"
sys.path.insert(0, str(REPO))

from bridge.resources import THREAD_VARS  # noqa: E402
from bridge.state import StateDB  # noqa: E402
from bridge.workdir import Workdir  # noqa: E402


def prepare(root: Path, models: Path | None) -> Path:
    for name in ("manifest.json", "story.json", "narration.ogg"):
        shutil.copy(STORY / name, root / name)
    if models is None:
        from workers.tiny import build_ltx, build_sdxl, build_vision

        models = root / ".models"
        build_sdxl(models / "sdxl"), build_ltx(models / "ltx"), build_vision(models / "vision")
    return models


def run_bridge(root: Path, models: Path, params: list[str], jobs: int | None) -> tuple[float, Path]:
    work = root / "work"
    argv = [sys.executable, "-m", "bridge", "run", str(root / "manifest.json"), "--workdir", str(work), "--quiet",
            "--param", f"sdxl_model={models / 'sdxl'}", "--param", f"ltx_model={models / 'ltx'}",
            "--param", f"vision_model={models / 'vision'}"]
    argv += [a for p in params for a in ("--param", p)] + (["--jobs", str(jobs)] if jobs else [])
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, cwd=root)
    return time.perf_counter() - t0, work


def attempts(work: Path) -> list[dict]:
    wd = Workdir(work)
    state = StateDB(wd.state_db, wd.results, snapshot=True)
    try:
        return state.attempts()
    finally:
        state.close()


def step_workers(work: Path) -> dict[str, str]:
    manifest = json.loads((work.parent / "manifest.json").read_text("utf-8"))
    return {s["id"]: s["worker"] for s in manifest["steps"]}


def committed_dir(step_id: str, item: int) -> str:
    return f"steps/{step_id}" + ("" if item < 0 else f"/{item}")


def run_naive(work: Path, naive: Path, replayed: list[dict], threads: int | None) -> tuple[float, int]:
    """Replay (a)'s attempts in the order they started, each a cold process writing where (a) committed.
    `threads`: the BLAS/OpenMP thread count to give them (None: the workers' own default, all cores)."""
    env = {**os.environ, **({name: str(threads) for name in THREAD_VARS} if threads else {})}
    workers = step_workers(work)
    loads = 0
    t0 = time.perf_counter()
    for attempt in replayed:
        args_text = (work / ".bridge" / "attempts" / Path(attempt["staging_dir"]).name / "args.json").read_text("utf-8")
        args = json.loads(args_text.replace(str(work / "steps"), str(naive / "steps")))
        out = naive / committed_dir(attempt["step_id"], attempt["item"])
        if out.exists():
            shutil.rmtree(out)  # a regeneration replaces the item, as the runner's commit does
        args["output_dir"] = str(out)
        args_file = naive / "args" / f"{attempt['id']}.json"
        args_file.parent.mkdir(parents=True, exist_ok=True)
        args_file.write_text(json.dumps(args), encoding="utf-8")
        done = subprocess.run([sys.executable, "-m", f"workers.{workers[attempt['step_id']]}",
                               "--input", str(args_file)], cwd=work.parent, capture_output=True, text=True, env=env)
        envelope = json.loads(done.stdout)
        loads += (envelope.get("metrics") or {}).get("model_cache_hit") is False
    return time.perf_counter() - t0, loads


def bridge_loads(work: Path) -> int:
    trace = json.loads((work / "trace.json").read_text("utf-8"))
    total = 0
    for step in trace["steps"].values():
        for unit in [step, *step.get("items", [])]:
            # a warm process reports its loads so far; an attempt loaded a model when it was no cache hit
            total += sum((a.get("metrics") or {}).get("model_cache_hit") is False for a in unit.get("attempts", []))
    return total


def image_pixels(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def video_pixels(path: Path):
    import av
    import numpy as np

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(np.int16)


def compare(work: Path, naive: Path) -> tuple[int, int, int]:
    """(identical, close, different) keyframes and clips. Close: at most 2 levels of 255 apart per pixel, what
    a different thread count gives (the runner splits the cores between concurrent attempts; the cold
    processes use them all, and float sums then round differently)."""
    identical = close = different = 0
    for pattern, read in (("steps/keyframes/*/*.png", image_pixels), ("steps/clips/*/*.mp4", video_pixels)):
        for a in sorted(work.glob(pattern)):
            b = naive / a.relative_to(work)
            pa, pb = read(a), (read(b) if b.exists() else None)
            if pb is not None and pa.shape == pb.shape and (pa == pb).all():
                identical += 1
                continue
            delta = int(abs(pa - pb).max()) if pb is not None and pa.shape == pb.shape else None
            close += delta is not None and delta <= 2
            different += delta is None or delta > 2
            print(f"  not identical: {a.relative_to(work)}: max |delta| {delta} of 255")
    return identical, close, different


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, help="tiny models built by `python -m workers.tiny build DIR`")
    ap.add_argument("--param", action="append", default=[], help="passed to both runs' manifest params")
    ap.add_argument("--jobs", type=int)
    ap.add_argument("--naive-threads", type=int, help="threads for (b)'s processes (default: all cores); the "
                    "runner's own per-attempt count (cores / jobs) makes (b)'s outputs bit-identical to (a)'s")
    opts = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="story-bench-") as tmp:
        root = Path(tmp)
        models = prepare(root, opts.models)
        bridge_s, work = run_bridge(root, models, opts.param, opts.jobs)
        replayed = attempts(work)
        naive_s, naive_loads = run_naive(work, root / "naive", replayed, opts.naive_threads)
        identical, close, different = compare(work, root / "naive")
        n_attempts = len(replayed)
        print(f"attempts: {n_attempts} (both runs do the same {n_attempts} units of work)")
        print(f"(a) runner, concurrent + warm pool: {bridge_s:7.1f} s   model loads {bridge_loads(work)}")
        print(f"(b) one cold process per item:       {naive_s:7.1f} s   model loads {naive_loads}")
        print(f"ratio b/a: {naive_s / bridge_s:.2f}x (goal >= 5x)")
        total = identical + close + different
        print(f"outputs: {identical} of {total} keyframes and clips identical, {close} within 2/255 per pixel, "
              f"{different} different")
        return 0 if different == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
