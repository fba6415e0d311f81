"""The one vocabulary of unit states: decisions, state.db rows, events and trace.json all use these values."""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    """Where a unit (a step, or one item of a foreach step) stands."""

    PENDING = "pending"            # known, not decided yet
    WAITING = "waiting"            # decided to run; queued for a slot, or backing off before a retry
    RUNNING = "running"            # an attempt is in flight
    COMMITTED = "committed"        # this run committed it
    CACHED = "cached"              # an earlier run's commit still verifies
    FAILED = "failed"
    SKIPPED = "skipped"            # an upstream produced no result
    INTERRUPTED = "interrupted"
    ABANDONED = "abandoned"        # an attempt a dead runner left running (state.db only)
    NOT_SELECTED = "not_selected"  # outside --only / --until

    def __str__(self) -> str:
        return self.value

    @property
    def produced(self) -> bool:
        return self in (State.COMMITTED, State.CACHED)


class Action(str, Enum):
    """What a decision says to do with a unit (`--explain` prints these)."""

    RUN = "run"
    SKIP = "skip"
    BLOCKED = "blocked"
    FAIL = "fail"

    def __str__(self) -> str:
        return self.value

    @property
    def leads_to(self) -> State:
        return {Action.RUN: State.WAITING, Action.SKIP: State.CACHED, Action.BLOCKED: State.SKIPPED,
                Action.FAIL: State.FAILED}[self]


def unit_label(step_id: str, item: int | None) -> str:
    """`ID` for a step, `ID[3]` for item 3 of a foreach step."""
    return step_id if item is None else f"{step_id}[{item}]"
