"""Deciding *when* units run: a dependency graph counted down by in-degree, a ready queue, the slots, and a
timed re-queue for backoff (a unit waiting for its retry holds no slot).

Pure bookkeeping: no processes, no files, no clock of its own (the coordinator passes `now`). Nodes are added
while the run goes (a foreach step's items are known only once its list is), each with the nodes it waits
for; a node is ready once every one of them is done.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from .resources import Grant, Resources, SlotPool

Node = Hashable


@dataclass
class _Runnable:
    node: Node
    resources: Resources | None
    queued_at: float
    worker: str | None = None  # whose attempt: it may take over that worker's idle warm process

    @property
    def gpus(self) -> int:
        return self.resources.gpu if self.resources is not None else 0


class Scheduler:
    def __init__(self, slots: SlotPool):
        self.slots = slots
        self._waiting_on: dict[Node, int] = {}
        self._dependants: dict[Node, list[Node]] = {}
        self._done: set[Node] = set()
        self._priority: dict[Node, tuple] = {}
        self._ready: list[tuple[tuple, int, Node]] = []  # a heap: lowest priority value first
        self._runnable: deque[_Runnable] = deque()
        self._delayed: list[tuple[float, int, _Runnable]] = []
        self._seq = itertools.count()

    # the graph ----------------------------------------------------------------------------------------
    def add(self, node: Node, waits_for: Iterable[Node], priority: tuple = ()) -> None:
        """A new node; ready now when everything it waits for is already done. Among ready nodes the lowest
        `priority` goes first (the coordinator uses (item, manifest position): item 0 flows downstream before
        item 4 starts upstream, which is what streaming is for)."""
        pending = {d for d in waits_for if d not in self._done}
        self._waiting_on[node] = len(pending)
        self._priority[node] = priority
        for dep in pending:
            self._dependants.setdefault(dep, []).append(node)
        if not pending:
            self._push_ready(node)

    def _push_ready(self, node: Node) -> None:
        heapq.heappush(self._ready, (self._priority.pop(node, ()), next(self._seq), node))

    def done(self, node: Node) -> None:
        """`node` is settled (produced a result or not): its dependants may become ready."""
        self._done.add(node)
        for after in self._dependants.pop(node, ()):
            self._waiting_on[after] -= 1
            if self._waiting_on[after] == 0:
                self._push_ready(after)

    def redo(self, node: Node, waits_for: Iterable[Node], priority: tuple = ()) -> None:
        """A settled node runs again (a quality gate regenerates an item). Whoever already counted it down
        stays counted: what must wait for the new outcome waits on a node of its own (the gate's verdict)."""
        self._done.discard(node)
        self.add(node, waits_for, priority)

    def is_done(self, node: Node) -> bool:
        return node in self._done

    def pop_ready(self) -> Node | None:
        """The next node whose dependencies are all done (to be decided: run, skip, ...)."""
        return heapq.heappop(self._ready)[2] if self._ready else None

    # running --------------------------------------------------------------------------------------------
    def enqueue(self, node: Node, resources: Resources | None, now: float, worker: str | None = None) -> None:
        """`node` is decided to run: it waits for a slot."""
        self._runnable.append(_Runnable(node, resources, now, worker))

    def defer(self, node: Node, resources: Resources | None, due: float, worker: str | None = None) -> None:
        """Back in the slot queue at `due` (backoff before a retry); until then it holds nothing."""
        heapq.heappush(self._delayed, (due, next(self._seq), _Runnable(node, resources, due, worker)))

    def release_due(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            self._runnable.append(heapq.heappop(self._delayed)[2])

    def next_due(self) -> float | None:
        return self._delayed[0][0] if self._delayed else None

    def take_startable(self, now: float) -> tuple[Node, Grant, float] | None:
        """The first queued node whose resources are free now: (node, grant, seconds it waited).

        First come, first served among those that fit, so a big request does not block small ones behind it;
        except on GPUs: once a GPU request waits, no later GPU request starts before it (the GPUs are reserved
        for it as they free up; else a 2-GPU request would wait forever behind a stream of 1-GPU ones). CPU-only
        requests still go past it.
        """
        self.release_due(now)
        gpu_reserved = False
        for i, entry in enumerate(self._runnable):
            on_gpus = entry.gpus > 0 and bool(self.slots.gpus)  # not a `fallback: cpu` step on a GPU-less machine
            if gpu_reserved and on_gpus:
                continue
            grant = self.slots.try_acquire(entry.resources, entry.worker)
            if grant is None:
                gpu_reserved = gpu_reserved or on_gpus
                continue
            del self._runnable[i]
            return entry.node, grant, max(0.0, now - entry.queued_at)
        return None

    def release(self, grant: Grant) -> None:
        self.slots.release(grant)

    def drop_queued(self) -> list[Node]:
        """Everything queued or backing off, removed (the run is interrupted)."""
        nodes = [e.node for e in self._runnable] + [e.node for _, _, e in self._delayed]
        self._runnable.clear()
        self._delayed.clear()
        return nodes

    def never_ready(self) -> list[Node]:
        """Nodes still waiting for something (after a complete run: a bug, never silently ignored)."""
        return [n for n, count in self._waiting_on.items() if count > 0]

    @property
    def has_queued(self) -> bool:
        return bool(self._runnable or self._delayed or self._ready)
