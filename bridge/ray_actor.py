"""A warm worker on a Ray node: an actor that hosts one `--serve` process (bridge/serve_client.py, the same
client the local warm pool uses), so that a fleet keeps models loaded across attempts too.

The actor holds the step's resources (its GPUs above all: Ray sets the actor's CUDA_VISIBLE_DEVICES, which the
process inherits when it starts) for as long as it lives. The runner (bridge/ray_warm.py) creates it, sends it
one request at a time and kills it when it is idle too long, when its room is needed, or after any request
the process did not answer.

`run` streams like the one-shot task (bridge/ray_task.py): `("event", {...})` live, then `("done", {...})` with
the raw answer (`proc`, a ProcessResult as a dict) or why there was none (`no_answer`), then, in data mode
ship, the output chunks. Nothing is judged here: the runner classifies, verifies and commits.
"""

from __future__ import annotations

import dataclasses
import itertools
import shutil
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .ray_task import node_cwd, node_env, placement, relay, send_back, ship_args
from .serve_client import NoAnswer, RequestNotSent, ServeClient, WarmState


class WarmHost:
    """One `--serve` process on this node. `max_concurrency=2`: `cancel` must get through while `run` is busy."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.env = node_env(spec)
        self.root = Path(tempfile.mkdtemp(prefix="storybridge-warm-"))
        # One long-lived thread forks the process: its death signal fires when the *thread* that forked ends.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warm-spawn")
        self._stop = threading.Event()
        self._requests = itertools.count(1)
        self.client: ServeClient | None = None

    def where(self) -> dict[str, Any]:
        """Where the actor runs; answers as soon as it is placed (the process is not started yet)."""
        return placement(self.env)

    def start(self, ready_timeout_s: float) -> dict[str, Any]:
        """Start the `--serve` process and wait for `ready`: {"pid"} or {"start_error": why} (then gone)."""
        self.client = ServeClient([*self.spec["prefix"], "--serve"], cwd=node_cwd(self.spec, self.root),
                                  env=self.env, kill_grace_s=self.spec["kill_grace_s"],
                                  spawn=lambda f: self._spawner.submit(f).result())
        why = self.client.wait_ready(ready_timeout_s, self._stop)
        return {"pid": self.client.pid} if why is None else {"start_error": why}

    def run(self, request: dict[str, Any]) -> Iterator[tuple]:
        """One request (args, request_id, timeout_s); the stream described above."""
        assert self.client is not None and self.client.state == WarmState.READY
        spec = {**self.spec, **request}
        root = self.root / f"request-{next(self._requests)}" if spec["ship"] else None
        if root is not None:
            root.mkdir()
        try:
            args = ship_args(spec, root) if root is not None else spec["args"]
            log = root / "stderr.log" if root is not None else Path(spec["stderr_log"])
            result: dict[str, Any] = {}
            yield from relay(lambda stop, on_event: self._exchange(args, log, spec, stop, on_event), result)
            answer = result["value"]
            answered = not isinstance(answer, NoAnswer)
            yield from send_back({"proc" if answered else "no_answer": dataclasses.asdict(answer)}, root, log,
                                 spec, outputs=answered)
        finally:
            if root is not None:
                shutil.rmtree(root, ignore_errors=True)

    def _exchange(self, args: dict[str, Any], log: Path, spec: dict[str, Any], stop: threading.Event,
                  on_event) -> Any:
        cancel = _Either(stop, self._stop)
        try:
            return self.client.exchange(args, stderr_log=log, request_id=spec["request_id"],
                                        timeout_s=spec["timeout_s"], cancel=cancel, on_event=on_event)
        except RequestNotSent as exc:
            return NoAnswer(why=f"it was gone before the request reached it: {exc}", wall_s=0.0,
                            exit_code=self.client.proc.returncode, peak_rss_mb=None, stderr_tail=[])

    def cancel(self) -> bool:
        """The runner is interrupted: the request in flight stops the process tree (TERM, grace, KILL)."""
        self._stop.set()
        return True

    def stop(self) -> bool:
        """Shut the process down politely (a `shutdown` request, then the tree), before the actor is killed."""
        if self.client is not None:
            self.client.shutdown()
        shutil.rmtree(self.root, ignore_errors=True)
        self._spawner.shutdown(wait=False)
        return True


class _Either:
    """Set when either event is (ServeClient polls `is_set`)."""

    def __init__(self, *events: threading.Event):
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)
