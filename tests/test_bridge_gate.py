"""The quality gate: a failing check item regenerates the item it checked with a varied seed, downstream
items wait for the verdict, exhausted items are listed, resume is exact (tests/fixtures/gate_worker.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from bridge_helpers import REPO, bridge_env, events, run_runner, schema_dir, trace, wait_for, write_manifest
from bridge_helpers import state_rows as rows

from bridge.cli import main
from bridge.runner import EXIT_OK, EXIT_STEP_FAILED

GATE_WORKER = str(REPO / "tests" / "fixtures" / "gate_worker.py")
TAGS = ["a", "b", "c"]
# seed = index + 1000 × regeneration: a passes at once (0), b at regeneration 2 (2001), c never (2, 1002, 2002)
PASS_SEEDS = [0, 2001]


@pytest.fixture(scope="module")
def schemas(tmp_path_factory) -> Path:
    return schema_dir(tmp_path_factory.mktemp("schemas"))


def story(log: Path, *, gate: dict | None = None, error_tags: list[str] = (), **make_extra) -> dict:
    """list -> keyframes (foreach) -> checks (gated, optional) and clips (streaming) -> all (the whole list)."""
    rule = {"pass": "all_match", "score": "items.0.score", "regenerates": "keyframes", "max_regenerations": 2,
            "vary": {"arg": "prompts.0.seed", "add": 1000}, **(gate or {})}
    logged = {"log_file": str(log)}
    steps = [
        {"id": "list", "worker": "gate", "args": {"role": "list", "items": TAGS}},
        {"id": "keyframes", "worker": "gate", "foreach": "${steps.list.result.items}",
         "ignore_input_files": ["log_file", "hang_once"],
         "args": {"role": "make", "tag": "${item}", "prompts": [{"prompt": "${item}", "seed": "${index}"}],
                  **logged, **make_extra}},
        {"id": "checks", "worker": "gate", "foreach": "${steps.keyframes.result}", "optional": True,
         "ignore_input_files": ["log_file"], "gate": rule,
         "args": {"role": "check", "image": "${item.images.0.path}", "tag": "${item.images.0.prompt}",
                  "pass_seeds": PASS_SEEDS, "error_tags": list(error_tags), **logged}},
        {"id": "clips", "worker": "gate", "foreach": "${steps.keyframes.result}", "ignore_input_files": ["log_file"],
         "args": {"role": "use", "image": "${item.images.0.path}", "tag": "${item.images.0.prompt}", **logged}},
        {"id": "all", "worker": "gate", "args": {"role": "list", "items": "${steps.keyframes.result}"}},
    ]
    return {"version": 1, "name": "t", "defaults": {"retry": {"max_attempts": 1}, "kill_grace_s": 1.0},
            "workers": {"gate": [sys.executable, GATE_WORKER]}, "steps": steps}


def jobs(log: Path, role: str) -> dict[str, list[int]]:
    """tag -> the seeds a role's finished jobs saw, in order."""
    seen: dict[str, list[int]] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        job = json.loads(line)
        if job["role"] == role and job["phase"] == "done":
            seen.setdefault(job["tag"], []).append(job["seed"])
    return seen


def gate_of(work: Path) -> list[tuple[int, str, list[int]]]:
    """(regenerations, verdict, candidates judged) per keyframes item, from trace.json."""
    items = trace(work)["steps"]["keyframes"]["items"]
    return [(it["regenerations"], it["gate"]["verdict"], [h["regeneration"] for h in it["gate"]["history"]])
            for it in items]


def test_failing_items_are_regenerated_and_downstream_sees_only_the_final_candidate(tmp_path, schemas):
    log, work = tmp_path / "jobs.log", tmp_path / "t.work"
    m = write_manifest(tmp_path, story(log))
    code, out, _ = run_runner(m, schemas, jobs=2)
    assert code == EXIT_OK, out
    assert jobs(log, "make") == {"a": [0], "b": [1, 1001, 2001], "c": [2, 1002, 2002]}  # the varied seeds
    assert jobs(log, "check") == {"a": [0], "b": [1, 1001, 2001], "c": [2, 1002, 2002]}
    assert jobs(log, "use") == {"a": [0], "b": [2001], "c": [2002]}  # never an intermediate candidate
    (whole,) = rows(work, "SELECT result FROM steps WHERE step_id='all'")[0]
    assert [it["images"][0]["seed"] for it in json.loads(whole)["items"]] == [0, 2001, 2002]
    assert gate_of(work) == [(0, "passed", [0]), (2, "passed", [0, 1, 2]), (2, "exhausted", [0, 1, 2])]
    history = trace(work)["steps"]["keyframes"]["items"][1]["gate"]["history"]
    assert history[0] == {"regeneration": 0, "value": False, "score": 0.1} and history[2]["value"] is True
    assert trace(work)["gate_never_passed"] == {"keyframes": [2]}
    evs = events(work)
    failed = [(e["item"], e["regeneration"]) for e in evs if e["event"] == "gate_failed"]
    assert sorted(failed) == [(1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]
    assert [(e["item"], e["regenerates"]) for e in evs if e["event"] == "gate_exhausted"] == [(2, "keyframes")]
    assert evs[-1]["event"] == "run_end" and evs[-1]["summary"]["gate_never_passed"] == {"keyframes": [2]}
    assert "never passed the gate: [2]" in out and "4 regeneration(s)" in out

    log.unlink()
    code, out, _ = run_runner(m, schemas, jobs=2, explain=True)  # resume: the recorded candidates are cache hits
    assert code == EXIT_OK, out
    assert not log.exists(), log.read_text()
    assert "skip    keyframes[1]: up to date (cache hit) [gate regeneration 2: prompts.0.seed +2000]" in out
    assert "gate    checks gates keyframes" in out
    assert gate_of(work) == [(0, "passed", [0]), (2, "passed", [0, 1, 2]), (2, "exhausted", [0, 1, 2])]
    assert trace(work)["steps"]["clips"]["status"] == "cached"
    code, out, _ = run_runner(m, schemas, dry_run=True)
    assert code == EXIT_OK and "skip    keyframes[2]: up to date (cache hit) [gate regeneration 2" in out, out


@pytest.mark.slow
def test_a_changed_prompt_starts_its_item_again_at_the_first_candidate(tmp_path, schemas):
    log, work = tmp_path / "jobs.log", tmp_path / "t.work"
    doc = story(log, gate={"max_regenerations": 1})
    assert run_runner(write_manifest(tmp_path, doc), schemas)[0] == EXIT_OK
    assert jobs(log, "make")["b"] == [1, 1001]
    log.unlink()
    doc["steps"][1]["args"]["tag"] = "${index}"  # every base arg changes: regeneration numbers start again
    code, out, _ = run_runner(write_manifest(tmp_path, doc), schemas)
    assert code == EXIT_OK, out
    assert jobs(log, "make") == {0: [0], 1: [1, 1001], 2: [2, 1002]}
    assert gate_of(work)[1] == (1, "exhausted", [0, 1])


def test_on_exhausted_fail_fails_the_regenerated_item_and_blocks_its_downstream(tmp_path, schemas):
    log, work = tmp_path / "jobs.log", tmp_path / "t.work"
    code, out, _ = run_runner(write_manifest(tmp_path, story(log, gate={"on_exhausted": "fail"})), schemas)
    assert code == EXIT_STEP_FAILED, out
    t = trace(work)["steps"]
    assert t["keyframes"]["status"] == "failed" and t["keyframes"]["items"][2]["error"]["kind"] == "gate_exhausted"
    assert [it["status"] for it in t["clips"]["items"]] == ["committed", "committed", "skipped"]
    assert jobs(log, "use") == {"a": [0], "b": [2001]}
    assert t["all"]["status"] == "skipped"


def test_a_check_that_fails_with_an_error_decides_nothing(tmp_path, schemas):
    log, work = tmp_path / "jobs.log", tmp_path / "t.work"
    code, out, _ = run_runner(write_manifest(tmp_path, story(log, error_tags=["b"])), schemas)
    assert code == EXIT_OK, out  # checks is optional
    assert jobs(log, "make")["b"] == [1]  # no regeneration
    assert jobs(log, "use")["b"] == [1]
    assert gate_of(work)[1] == (0, "unchecked", [])
    assert trace(work)["steps"]["checks"]["items"][1]["status"] == "failed"


@pytest.mark.slow
def test_a_runner_killed_mid_regeneration_resumes_from_the_recorded_regeneration(tmp_path, schemas):
    log, marker, work = tmp_path / "jobs.log", tmp_path / "hang.marker", tmp_path / "t.work"
    m = write_manifest(tmp_path, story(log, hang_once=str(marker), hang_seed=1001))
    runner = subprocess.Popen([sys.executable, "-m", "bridge", "run", str(m), "--jobs", "1"], cwd=REPO,
                              env=bridge_env(schemas), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        assert wait_for(marker.exists, 60)  # keyframes[1] regeneration 1 is running
    finally:
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(30)
    assert rows(work, "SELECT json_extract(gate, '$.regeneration') FROM steps WHERE step_id='keyframes' "
                      "AND item=1") == [(1,)]
    code, out, _ = run_runner(m, schemas, jobs=1)
    assert code == EXIT_OK, out
    assert jobs(log, "make") == {"a": [0], "b": [1, 1001, 2001], "c": [2, 1002, 2002]}  # b's first candidate once
    assert jobs(log, "check")["a"] == [0] and jobs(log, "use")["a"] == [0]
    assert jobs(log, "use") == {"a": [0], "b": [2001], "c": [2002]}
    assert gate_of(work)[1] == (2, "passed", [0, 1, 2])  # the history of the killed run is kept


def validate_json(tmp_path: Path, doc: dict, capsys) -> list[tuple[str, str]]:
    assert main(["validate", str(write_manifest(tmp_path, doc)), "--json"]) == 2
    return sorted((p["path"], p["type"]) for p in json.loads(capsys.readouterr().out)["errors"])


def test_validation_names_every_gate_problem(tmp_path, capsys):
    doc = story(tmp_path / "jobs.log")
    rule = doc["steps"][2]["gate"]
    doc["steps"] += [
        {"id": "lone", "worker": "gate", "args": {}, "gate": dict(rule)},
        {"id": "self", "worker": "gate", "foreach": "${steps.list.result.items}", "gate": {**rule, "regenerates": "self"}},
        {"id": "nostream", "worker": "gate", "foreach": "${steps.list.result.items}", "gate": dict(rule)},
        {"id": "plain", "worker": "gate", "foreach": "${steps.keyframes.result}", "gate": {**rule, "regenerates": "list"}},
    ]
    doc["steps"][2]["gate"] = {**rule, "vary": {"arg": "prompts.0.nope"}, "max_regenerations": 11}
    assert validate_json(tmp_path, doc, capsys) == [
        ("$.steps[2].gate.max_regenerations", "less_than_equal"),
        ("$.steps[2].gate.vary.arg", "gate_vary_arg"),
        ("$.steps[5].gate", "gate_needs_foreach"),
        ("$.steps[6].gate.regenerates", "self_reference"),
        ("$.steps[7].gate.regenerates", "gate_not_streaming"),
        ("$.steps[8].gate.regenerates", "gate_not_foreach"),
    ]
    doc = story(tmp_path / "jobs.log", gate={"vary": {"arg": "role"}})  # a literal that is not an integer
    assert validate_json(tmp_path, doc, capsys) == [("$.steps[2].gate.vary.arg", "gate_vary_arg")]
    doc = story(tmp_path / "jobs.log")
    doc["steps"][2]["args"]["all"] = "${steps.all.result}"  # `all` needs every keyframe: every verdict
    assert validate_json(tmp_path, doc, capsys) == [("$.steps[2].gate.regenerates", "gate_waits_on_itself")]
    doc = story(tmp_path / "jobs.log")
    doc["steps"].append({"id": "again", "worker": "gate", "foreach": "${steps.checks.result}",
                         "gate": {**doc["steps"][2]["gate"], "regenerates": "checks", "vary": {"arg": "tag"}}})
    assert validate_json(tmp_path, doc, capsys) == [("$.steps[5].gate.regenerates", "gate_chain")]


def test_a_vary_arg_resolved_to_a_non_integer_fails_the_item_at_run_time(tmp_path, schemas):
    log, work = tmp_path / "jobs.log", tmp_path / "t.work"
    doc = story(log, gate={"vary": {"arg": "prompts.0.prompt"}})  # `${item}`: a string once resolved
    assert main(["validate", str(write_manifest(tmp_path, doc))]) == 0  # cannot be known before the run
    code, out, _ = run_runner(write_manifest(tmp_path, doc), schemas)
    assert code == EXIT_STEP_FAILED, out
    error = trace(work)["steps"]["keyframes"]["items"][0]["error"]
    assert error["kind"] == "invalid_reference" and "prompts.0.prompt" in error["message"]
    assert not log.exists()


def test_pass_and_score_are_checked_against_the_gate_workers_result_schema(tmp_path, capsys):
    rule = {"pass": "all_matches", "score": "items.0.score", "regenerates": "keyframes",
            "vary": {"arg": "prompts.0.seed", "add": 1000}}
    doc = {"version": 1, "name": "t", "steps": [
        {"id": "keyframes", "worker": "sdxl", "foreach": "${steps.scenes.result.items}",
         "args": {"model": "m", "prompts": [{"prompt": "${item}", "seed": 7}]}},
        {"id": "scenes", "worker": "gate_list", "args": {}},
        {"id": "checks", "worker": "vision", "foreach": "${steps.keyframes.result}", "gate": rule,
         "args": {"model": "v", "task": "validate", "images": [{"path": "${item.images.0.path}"}]}}]}
    assert validate_json(tmp_path, doc, capsys) == [("$.steps[2].gate.pass", "unknown_result_path")]
    rule["pass"] = "all_match"
    assert main(["validate", str(write_manifest(tmp_path, doc))]) == 0


def test_a_format2_workdir_gains_the_gate_column_and_resumes(tmp_path, schemas):
    import sqlite3

    log, work = tmp_path / "jobs.log", tmp_path / "t.work"
    doc = story(log)
    doc["steps"][2].pop("gate")  # made before gates existed
    m = write_manifest(tmp_path, doc)
    assert run_runner(m, schemas)[0] == EXIT_OK
    db = sqlite3.connect(work / ".bridge" / "state.db")
    db.executescript("ALTER TABLE steps DROP COLUMN gate; UPDATE meta SET value='2' WHERE key='format';")
    db.close()
    log.unlink()
    code, out, _ = run_runner(m, schemas)
    assert code == EXIT_OK and not log.exists(), out
    assert rows(work, "SELECT value FROM meta WHERE key='format'") == [("3",)]
    assert rows(work, "SELECT count(gate) FROM steps") == [(0,)]


def test_a_zipped_consumer_of_the_regenerated_step_also_waits_for_the_verdicts(tmp_path, schemas):
    log = tmp_path / "jobs.log"
    doc = story(log)
    doc["steps"][3]["foreach"] = {"frame": "${steps.keyframes.result}", "tag": "${steps.list.result.items}"}
    doc["steps"][3]["args"].update(image="${item.frame.images.0.path}", tag="${item.tag}")
    code, out, _ = run_runner(write_manifest(tmp_path, doc), schemas, jobs=2)
    assert code == EXIT_OK, out
    assert jobs(log, "use") == {"a": [0], "b": [2001], "c": [2002]}


def test_gate_fields_take_params(tmp_path, schemas):
    log, work = tmp_path / "jobs.log", tmp_path / "t.work"
    doc = story(log, gate={"max_regenerations": "${params.regenerations}"})
    doc["params"] = {"regenerations": 2}
    m = write_manifest(tmp_path, doc)
    code, out, _ = run_runner(m, schemas, [("regenerations", "0")], jobs=2)
    assert code == EXIT_OK, out
    assert jobs(log, "make") == {"a": [0], "b": [1], "c": [2]}  # no regeneration at all
    assert [g[:2] for g in gate_of(work)] == [(0, "passed"), (0, "exhausted"), (0, "exhausted")]
