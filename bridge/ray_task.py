"""What runs on a Ray node for one attempt: the worker subprocess, started exactly as the local executor starts
it (bridge/process.py: argv list, own session, death signal, tree kill on timeout, stdout cap, stderr relay).

`attempt_on_node` is a generator task (the executor wraps it with `ray.remote`); it yields, in order:

* `("placed", {...})`: where it landed (node id, IP, the GPUs Ray assigned), before anything else;
* `("event", {...})`: each JSON line of the worker's stderr, live;
* `("done", {...})`: the raw process result (stdout, exit code, stderr tail, timings) and, in data mode `ship`,
  the node's stderr log and the list of output files;
* `("chunk", rel, bytes)` (mode `ship` only): the output files in bounded pieces.

Nothing is judged here: classification, verification and the commit stay with the runner (the head).
A cancelled task (`ray.cancel`, the runner interrupted) stops the worker's tree before it ends; a driver that
dies takes its Ray worker processes with it, and the death signal takes the worker subprocess along.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import ray_data
from .process import ProcessResult, run_process
from .resources import THREAD_VARS
from .worker_client import invoke_argv

#: THREAD_VARS are set from the step's declared CPUs. Ray exports OMP_NUM_THREADS = the task's num_cpus into its
#: workers (1 by default), and a worker subprocess would inherit it; the step's own `cpu` wins.
#: The stderr log shipped back in mode `ship` (its end; the whole log stays on the node only while it runs).
MAX_SHIPPED_LOG_BYTES = 1 << 20
_POLL_S = 0.1


def attempt_on_node(spec: dict[str, Any]) -> Iterator[tuple]:
    env = node_env(spec)
    yield "placed", placement(env)
    root = Path(tempfile.mkdtemp(prefix="storybridge-attempt-")) if spec["ship"] else None
    try:
        argv, cwd, log = _prepare(spec, root)
        result: dict[str, Any] = {}
        try:
            yield from relay(lambda stop, on_event: run_process(
                argv, cwd=cwd, env=env, timeout_s=spec["timeout_s"], kill_grace_s=spec["kill_grace_s"],
                cancel=stop, on_event=on_event, stderr_log=log), result)
        except OSError as exc:  # the program or the cwd is missing on this node
            yield "done", {"start_error": f"cannot start worker {spec['prefix']!r} on {socket.gethostname()}: {exc}"}
            return
        yield from send_back({"proc": dataclasses.asdict(result["value"])}, root, log, spec)
    finally:
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


def send_back(done: dict[str, Any], root: Path | None, log: Path, spec: dict[str, Any],
              outputs: bool = True) -> Iterator[tuple]:
    """The `done` message; in mode ship with the node's stderr log and output list, then the output chunks
    (none when `outputs` is false: a request that was not answered has nothing to commit)."""
    if root is None:
        yield "done", done
        return
    files = ray_data.output_files(root / "out") if outputs else []
    yield "done", {**done, "node_output_dir": str(root / "out"), "files": files, "stderr_log": _log_tail(log)}
    for rel, data in ray_data.chunks(root / "out", files, spec.get("chunk_bytes", ray_data.CHUNK_BYTES)):
        yield "chunk", rel, data


def node_env(spec: dict[str, Any]) -> dict[str, str]:
    """The runner's environment for the worker (as locally), with the GPUs Ray assigned to this task and the
    thread counts of the step's declared CPUs."""
    env = {k: v for k, v in spec["env"].items() if k not in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")}
    if spec["num_gpus"]:
        env["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES", "")  # set by Ray for this task
    elif spec["hide_gpus"]:
        env["CUDA_VISIBLE_DEVICES"] = ""  # resources declared without a GPU: it sees none, as locally
    elif "CUDA_VISIBLE_DEVICES" in spec["env"]:
        env["CUDA_VISIBLE_DEVICES"] = spec["env"]["CUDA_VISIBLE_DEVICES"]
    for name in THREAD_VARS:
        env[name] = str(spec["threads"])
    return env


def placement(env: dict[str, str]) -> dict[str, Any]:
    import ray

    visible = env.get("CUDA_VISIBLE_DEVICES")
    return {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address(),
            "hostname": socket.gethostname(), "cuda_visible_devices": visible,
            "devices": [f"cuda:{d}" for d in visible.split(",") if d] if visible else ["cpu"],
            "threads": int(env["OMP_NUM_THREADS"])}


def _prepare(spec: dict[str, Any], root: Path | None) -> tuple[list[str], Path, Path]:
    """(argv, cwd, stderr log). Shared storage: the head's args file and paths as they are. Ship: the args
    rewritten to this node's copies of the inputs and a local output_dir."""
    if root is None:
        return invoke_argv(spec["prefix"], Path(spec["args_file"])), Path(spec["cwd"]), Path(spec["stderr_log"])
    args = ship_args(spec, root)
    (root / "args.json").write_text(json.dumps(args, ensure_ascii=False, indent=1), encoding="utf-8")
    return invoke_argv(spec["prefix"], root / "args.json"), node_cwd(spec, root), root / "stderr.log"


def ship_args(spec: dict[str, Any], root: Path) -> dict[str, Any]:
    """Mode ship: the args with this node's copies of the inputs (under root/in) and output_dir root/out."""
    placed = ray_data.place_inputs(root / "in", spec["inputs"])
    (root / "out").mkdir()
    return {**ray_data.rewrite_args(spec["args"], placed), "output_dir": str(root / "out")}


def node_cwd(spec: dict[str, Any], root: Path) -> Path:
    """The manifest's directory when this node has it (shared storage, or the head itself), else root."""
    return Path(spec["cwd"]) if os.path.isdir(spec["cwd"]) else root


def relay(work: Callable[[threading.Event, Callable[[dict[str, Any]], None]], Any],
          result: dict[str, Any]) -> Iterator[tuple]:
    """Run `work(stop, on_event)` on a thread and yield its events as they come; `result["value"]` at the end.
    A cancel (KeyboardInterrupt from `ray.cancel`), a closed generator or a lost raylet sets `stop` first
    (the work stops its worker's tree: TERM, kill_grace_s, KILL)."""
    events: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
    stop = threading.Event()

    def run() -> None:
        try:
            result["value"] = work(stop, events.put)
        except BaseException as exc:  # noqa: BLE001 - handed to the generator, which re-raises it
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True, name="storybridge-worker")
    raylet = os.getppid()  # a Ray worker is the raylet's child; orphaned, it outlives a killed raylet a long time
    thread.start()
    try:
        while thread.is_alive() or not events.empty():
            try:
                yield "event", events.get(timeout=_POLL_S)
            except queue.Empty:
                pass
            if os.getppid() != raylet:
                raise NodeGone(f"the raylet of {socket.gethostname()} is gone")
    except BaseException:
        stop.set()
        thread.join()
        raise
    thread.join()
    if "error" in result:
        raise result["error"]


class NodeGone(RuntimeError):
    """This node's raylet died: the attempt is lost, and its worker must not run on unseen."""


def _log_tail(log: Path) -> bytes:
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - MAX_SHIPPED_LOG_BYTES))
            return f.read()
    except OSError:
        return b""


def process_result(doc: dict[str, Any]) -> ProcessResult:
    """The head's copy of the node's ProcessResult."""
    return ProcessResult(**doc)
