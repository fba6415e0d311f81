"""What the coordinator keeps per run (RunContext) and per unit decided to run (UnitRun)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .events import EventLog
from .manifest import LoadedManifest, RetryPolicy
from .planner import Decision
from .report import StepTrace
from .resources import Grant
from .schemas import SchemaStore
from .state import WHOLE_STEP, StateDB
from .states import unit_label
from .workdir import Workdir
from .worker_client import AttemptFiles


@dataclass
class RunContext:
    """What coordinating a run needs from the runner."""

    m: LoadedManifest
    wd: Workdir
    state: StateDB
    events: EventLog
    schemas: SchemaStore
    env: dict[str, str]
    cancel: threading.Event
    run_id: str
    rng: random.Random
    say: Callable[[str], None]
    explain: bool = False


@dataclass
class UnitRun:
    """A unit decided to run, until it settles: its key, attempts so far, and what its attempt holds."""

    node: tuple
    sid: str
    item: int
    decision: Decision
    policy: RetryPolicy
    timeout_s: float
    trace: StepTrace
    attempt: int = 0
    grant: Grant | None = None
    row: int | None = None
    files: AttemptFiles | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    decided_at: float = field(default_factory=time.monotonic)  # its trace's wall_s runs from here

    def stop_clock(self) -> None:
        self.trace.wall_s = round(time.monotonic() - self.decided_at, 4)

    @property
    def label(self) -> str:
        return unit_label(self.sid, None if self.item == WHOLE_STEP else self.item)

    def ids(self) -> dict[str, Any]:
        """The step (and item) fields of this unit's events."""
        return {"step": self.sid} if self.item == WHOLE_STEP else {"step": self.sid, "item": self.item}
