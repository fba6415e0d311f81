"""Crash consistency: the runner SIGKILLed at random points, then resumed (issue 9, Tests)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from bridge_helpers import REPO, bare_manifest, bridge_env, run_runner, schema_dir, write_manifest

from bridge.runner import EXIT_OK

STEPS = 30
KILLS = 10
SEED = int(os.environ.get("STORYBRIDGE_CRASH_SEED", "9"))


def chain_manifest() -> tuple[dict, dict[str, str]]:
    """30 steps; each output is its upstream's output (read through a reference to the committed file) plus
    its own text, so a lost, repeated or mixed-up commit shows in the final bytes."""
    steps, expected = [], {}
    for i in range(STEPS):
        sid, args = f"s{i:02d}", {"outputs": {"o": f"{i};"}}
        needs = []
        if i:
            upstream = f"s{i - 1:02d}"
            args["prefix_from"] = f"${{steps.{upstream}.result.files.o}}"
            expected[sid] = expected[upstream] + f"{i};"
        else:
            expected[sid] = "0;"
        if i >= 3 and i % 4 == 0:
            needs.append(f"s{i - 3:02d}")
        steps.append({"id": sid, "worker": "bare", "args": args, "needs": needs})
    return bare_manifest(steps), expected


@pytest.mark.slow
def test_random_sigkills_then_resume_commit_every_step_once(tmp_path):
    schemas = schema_dir(tmp_path)
    doc, expected = chain_manifest()
    m = write_manifest(tmp_path, doc)
    work = tmp_path / "t.work"
    rng = random.Random(SEED)
    for _ in range(KILLS):
        runner = subprocess.Popen([sys.executable, "-m", "bridge", "run", str(m)], cwd=REPO, env=bridge_env(schemas),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(0.1, 0.7))  # the 30 steps take about a second on an idle machine: kills land all along
        try:
            os.killpg(runner.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        runner.wait(30)

    code, out, _ = run_runner(m, schemas)
    assert code == EXIT_OK, f"seed {SEED}\n{out}"
    for sid, text in expected.items():
        assert (work / "steps" / sid / "o").read_text() == text, (SEED, sid)
    db = sqlite3.connect(work / ".bridge" / "state.db")
    try:
        committed = dict(db.execute("SELECT step_id, COUNT(*) FROM attempts WHERE status='committed' "
                                    "GROUP BY step_id").fetchall())
        running = db.execute("SELECT COUNT(*) FROM attempts WHERE status='running'").fetchone()[0]
        steps = dict(db.execute("SELECT step_id, status FROM steps").fetchall())
    finally:
        db.close()
    assert committed == dict.fromkeys(expected, 1), SEED  # every step committed exactly once, over all runs
    assert running == 0 and set(steps.values()) == {"committed"}
    assert not list((work / ".bridge" / "staging").iterdir()) and not list((work / ".bridge" / "trash").iterdir())
