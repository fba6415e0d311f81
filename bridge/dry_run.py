"""What a dry run says: each unit's decision, then what each quality gate would do, as console lines and
(with `--events-stdout`) `plan` events. Nothing runs and nothing is written."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TextIO

from . import gate
from .manifest import LoadedManifest
from .planner import Planner


def say_plan(planner: Planner, m: LoadedManifest, selected: list[str], say: Callable[[str], None],
             mirror: TextIO | None) -> None:
    for d in planner.plan(selected):
        say(f"{d.action.value:<7} {d.label}: {d.reason}")
        if mirror:
            item = {} if d.item < 0 else {"item": d.item}
            mirror.write(json.dumps({"event": "plan", "step": d.step, **item, "action": d.action.value,
                                     "reason": d.reason, "key": d.key}) + "\n")
    _say_gates(m, selected, say, mirror)


def _say_gates(m: LoadedManifest, selected: list[str], say: Callable[[str], None], mirror: TextIO | None) -> None:
    """What each quality gate would do (its verdicts need the check results, so a dry run only says how)."""
    for check, target, line in gate.plan_lines(m.gated_by, m.steps, selected):
        say(f"gate    {line}")
        if mirror:
            mirror.write(json.dumps({"event": "plan", "step": check, "action": "gate", "regenerates": target,
                                     "reason": line}) + "\n")
