"""The runner end to end, with the fixture worker as a real subprocess."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from bridge_helpers import REPO, bridge_env, events, fixture_manifest, lines, schema_dir, wait_for, write_manifest

from bridge.cli import main
from bridge.manifest import load
from bridge.runner import EXIT_INTERRUPTED, EXIT_LOCKED, EXIT_OK, EXIT_STEP_FAILED, Runner, RunOptions
from bridge.schemas import SchemaStore


@pytest.fixture
def schemas(tmp_path_factory) -> Path:
    return schema_dir(tmp_path_factory.mktemp("schemas"))


def run(manifest: Path, schemas: Path, **opts) -> tuple[int, str, Runner]:
    out = io.StringIO()
    runner = Runner(load(manifest, SchemaStore(schemas)), RunOptions(**opts), schemas=SchemaStore(schemas), console=out)
    return runner.run(), out.getvalue(), runner


def trace(workdir: Path) -> dict:
    return json.loads((workdir / "trace.json").read_text("utf-8"))


def step(sid: str, count: Path | None = None, **args) -> dict:
    a = dict(args)
    if count is not None:
        a["count_file"] = str(count)
    return {"id": sid, "worker": "fixture", "args": a, "ignore_input_files": ["count_file"]}


def test_pipeline_commits_rewrites_paths_and_resumes(tmp_path, schemas):
    ca, cb = tmp_path / "a.count", tmp_path / "b.count"
    doc = fixture_manifest([
        step("a", ca, outputs={"out": "hello"}, echo={"n": [1, 2]}),
        step("b", cb, input_files=["${steps.a.result.files.out}"], echo="${steps.a.result.echo.n.1}",
             outputs={"copy": "x"}),
    ])
    m = write_manifest(tmp_path, doc)
    code, out, runner = run(m, schemas)
    assert code == EXIT_OK, out
    work = tmp_path / "t.work"
    committed = work / "steps" / "a" / "out"
    assert committed.read_text() == "hello"
    b_args = json.loads(next((work / ".bridge" / "attempts").glob("b-1-*/args.json")).read_text())
    assert b_args["input_files"] == [str(committed.resolve())]  # the committed path, not the staging one
    assert b_args["echo"] == 2 and b_args["output_dir"].startswith(str((work / ".bridge" / "staging").resolve()))
    rec = runner.state  # closed; read the DB again through a second run instead
    assert rec is not None
    assert not list((work / ".bridge" / "staging").iterdir())
    t = trace(work)
    assert t["steps"]["a"]["attempts"][0]["exit_code"] == 0 and t["steps"]["a"]["peak_rss_mb"] > 0
    kinds = [e["event"] for e in events(work)]
    for name in ("run_start", "step_start", "attempt_start", "progress", "attempt_end", "step_committed", "run_end"):
        assert name in kinds

    code, out, _ = run(m, schemas, explain=True)
    assert code == EXIT_OK
    assert "skip    a: up to date" in out and "skip    b: up to date" in out
    assert (lines(ca), lines(cb)) == (1, 1)
    assert trace(work)["steps"]["b"]["cache_hit"] is True

    # A corrupted committed output is detected (sha256) and only that step (and its dependants) re-run.
    committed.write_text("tampered")
    code, out, _ = run(m, schemas, explain=True)
    assert code == EXIT_OK and "run     a: output corrupt" in out
    assert (lines(ca), lines(cb)) == (2, 1)  # a re-made the same bytes, so b's key is unchanged


def test_changing_one_arg_reruns_exactly_the_dependants(tmp_path, schemas):
    counts = {s: tmp_path / f"{s}.count" for s in "abcd"}
    inp = tmp_path / "input.txt"
    inp.write_text("v1")

    def doc(text: str) -> dict:
        return fixture_manifest([
            step("a", counts["a"], outputs={"o": text}),
            step("b", counts["b"], input_files=["${steps.a.result.files.o}"]),
            {**step("c", counts["c"]), "needs": ["b"]},
            step("d", counts["d"], input_files=[str(inp)]),
        ])

    m = write_manifest(tmp_path, doc("one"))
    assert run(m, schemas)[0] == EXIT_OK
    write_manifest(tmp_path, doc("two"))
    code, out, _ = run(m, schemas, explain=True)
    assert code == EXIT_OK
    assert [lines(counts[s]) for s in "abcd"] == [2, 2, 2, 1]
    assert "run     a: args changed" in out and "skip    d: up to date" in out
    inp.write_text("v2")  # an input file's content changes: only its step re-runs
    code, out, _ = run(m, schemas, explain=True)
    assert [lines(counts[s]) for s in "abcd"] == [2, 2, 2, 2]
    assert f"run     d: input changed: {inp.resolve()}" in out


def test_retry_backoff_and_stop_per_kind(tmp_path, schemas):
    c = {k: tmp_path / f"{k}.count" for k in ("flaky", "bad", "final", "exhaust", "crash")}
    doc = fixture_manifest([
        step("flaky", c["flaky"], mode="fail", kind="transient", fail_times=2, outputs={"o": "ok"}),
        {**step("bad", c["bad"], mode="fail", kind="invalid_input"), "optional": True},
        {**step("final", c["final"], mode="fail", kind="resource", retryable=False), "optional": True},
        {**step("exhaust", c["exhaust"], mode="fail", kind="external"), "optional": True,
         "retry": {"max_attempts": 2, "backoff_s": [0.1]}},
        {**step("crash", c["crash"], mode="exit_no_json", exit_code=9), "optional": True,
         "retry": {"max_attempts": 2, "backoff_s": [0]}},
    ], retry={"max_attempts": 4, "backoff_s": [0.3, 0.6]})
    m = write_manifest(tmp_path, doc)
    code, out, _ = run(m, schemas)
    assert code == EXIT_OK, out  # every failure is in an optional step
    assert {k: lines(p) for k, p in c.items()} == {"flaky": 3, "bad": 1, "final": 1, "exhaust": 2, "crash": 2}
    evs = events(tmp_path / "t.work")
    starts = [e["ts"] for e in evs if e["event"] == "attempt_start" and e["step"] == "flaky"]
    ends = [e["ts"] for e in evs if e["event"] == "attempt_end" and e["step"] == "flaky"]
    gaps = [round(s - e, 2) for e, s in zip(ends[:2], starts[1:], strict=True)]
    assert 0.3 <= gaps[0] < 1.5 and 0.6 <= gaps[1] < 2.0, gaps
    sched = [e["delay_s"] for e in evs if e["event"] == "retry_scheduled" and e["step"] == "flaky"]
    assert sched == [0.3, 0.6]
    failed = {e["step"]: e for e in evs if e["event"] == "step_failed"}
    assert failed["bad"]["kind"] == "invalid_input" and "not retried" in failed["bad"]["why"]
    assert failed["final"]["why"] == "the worker said retryable=false"
    assert failed["exhaust"]["why"] == "retries exhausted"
    assert failed["crash"]["kind"] == "crash" and "exit code 9" in failed["crash"]["message"]
    t = trace(tmp_path / "t.work")["steps"]
    assert [a["error_kind"] for a in t["flaky"]["attempts"]] == ["transient", "transient", None]
    assert [a["exit_code"] for a in t["flaky"]["attempts"]] == [5, 5, 0]


def test_failure_skips_dependants_and_fails_the_run(tmp_path, schemas):
    doc = fixture_manifest([
        step("a", mode="fail", kind="model_unavailable"),
        step("b", echo="${steps.a.result.mode}"),
        step("c", outputs={"o": "independent work still happens"}),
        {**step("opt", mode="fail", kind="invalid_input"), "optional": True},
        step("after_opt", echo="${steps.opt.result.mode}"),
    ])
    m = write_manifest(tmp_path, doc)
    code, out, _ = run(m, schemas)
    assert code == EXIT_STEP_FAILED
    t = trace(tmp_path / "t.work")["steps"]
    assert t["a"]["status"] == "failed" and t["a"]["error"]["kind"] == "model_unavailable"
    assert t["b"]["status"] == "skipped" and "upstream a produced no result" in t["b"]["reason"]
    assert t["c"]["status"] == "committed"
    assert t["after_opt"]["status"] == "skipped" and "optional upstream opt" in t["after_opt"]["reason"]
    assert not (tmp_path / "t.work" / "steps" / "a").exists()


def test_timeout_kills_the_whole_tree(tmp_path, schemas):
    pid_file = tmp_path / "child.pid"
    doc = fixture_manifest([{**step("slow", mode="spawn_hang", child_pid_file=str(pid_file), sleep_s=60),
                             "timeout_s": 1.5, "retry": {"max_attempts": 1}}], kill_grace_s=1.0)
    m = write_manifest(tmp_path, doc)
    code, out, _ = run(m, schemas)
    assert code == EXIT_STEP_FAILED
    child = int(pid_file.read_text())
    assert wait_for(lambda: not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE, 5)
    att = trace(tmp_path / "t.work")["steps"]["slow"]["attempts"]
    assert att[0]["error_kind"] == "timeout" and att[0]["wall_s"] < 10
    assert not (tmp_path / "t.work" / "steps" / "slow").exists()


def _start_runner(manifest: Path, schemas: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bridge", "run", str(manifest), *extra], cwd=REPO,
                            env=bridge_env(schemas), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _attempt_started(work: Path, sid: str):
    return lambda: any(e["event"] == "attempt_start" and e["step"] == sid for e in events(work))


def test_sigkill_mid_step_then_rerun_commits_each_step_once(tmp_path, schemas):
    c = {s: tmp_path / f"{s}.count" for s in "abc"}
    doc = fixture_manifest([
        step("a", c["a"], outputs={"o": "a"}),
        step("b", c["b"], mode="hang", sleep_s=1.5, outputs={"o": "b"}, echo="${steps.a.result.files.o}"),
        step("c", c["c"], outputs={"o": "c"}, echo="${steps.b.result.files.o}"),
    ])
    m = write_manifest(tmp_path, doc)
    work = tmp_path / "t.work"
    proc = _start_runner(m, schemas)
    try:
        assert wait_for(lambda: lines(c["b"]) == 1, 30), proc.stderr.read1().decode() if proc.poll() else "no b"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (work / "steps" / "a" / "o").exists() and not (work / "steps" / "b").exists()
    assert list((work / ".bridge" / "staging").iterdir())  # the killed attempt's staging dir: never committed

    code, out, _ = run(m, schemas, explain=True)
    assert code == EXIT_OK, out
    assert "skip    a: up to date" in out and "run     b: previous interrupted" in out
    assert [lines(c[s]) for s in "abc"] == [1, 2, 1]  # only the killed step ran again
    assert sorted(p.name for p in (work / "steps").iterdir()) == ["a", "b", "c"]
    assert not list((work / ".bridge" / "staging").iterdir())
    assert any(e["event"] == "attempt_abandoned" and e["step"] == "b" for e in events(work))
    assert run(m, schemas)[0] == EXIT_OK and [lines(c[s]) for s in "abc"] == [1, 2, 1]


def test_sigterm_stops_the_worker_tree_and_leaves_a_resumable_state(tmp_path, schemas):
    pid_file = tmp_path / "child.pid"
    doc = fixture_manifest([step("a", outputs={"o": "a"}),
                            step("b", mode="spawn_hang", child_pid_file=str(pid_file), sleep_s=60)])
    m = write_manifest(tmp_path, doc)
    work = tmp_path / "t.work"
    proc = _start_runner(m, schemas)
    try:
        assert wait_for(pid_file.exists, 30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == EXIT_INTERRUPTED
    finally:
        if proc.poll() is None:
            proc.kill()
    child = int(pid_file.read_text())
    assert wait_for(lambda: not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE, 5)
    t = trace(work)
    assert t["exit_code"] == EXIT_INTERRUPTED and t["steps"]["b"]["status"] == "interrupted"
    assert not (work / "steps" / "b").exists() and not list((work / ".bridge" / "staging").iterdir())
    assert not (work / ".bridge" / "lock").read_text()  # released


def test_second_runner_on_the_same_workdir_is_refused(tmp_path, schemas, capsys):
    doc = fixture_manifest([step("slow", mode="hang", sleep_s=20)])
    m = write_manifest(tmp_path, doc)
    proc = _start_runner(m, schemas)
    try:
        assert wait_for(_attempt_started(tmp_path / "t.work", "slow"), 30)
        code, out, _ = run(m, schemas)
        assert code == EXIT_LOCKED
        assert "in use by another runner" in out and f"pid {proc.pid}" in out
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)


def test_explain_only_until_dry_run(tmp_path, schemas, capsys, monkeypatch):
    monkeypatch.setenv("STORYBRIDGE_SCHEMA_DIR", str(schemas))
    c = {s: tmp_path / f"{s}.count" for s in "abc"}
    doc = fixture_manifest([
        step("a", c["a"], outputs={"o": "a"}),
        step("b", c["b"], echo="${steps.a.result.files.o}"),
        step("c", c["c"], echo="${steps.b.result.mode}"),
    ])
    m = write_manifest(tmp_path, doc)

    assert main(["run", str(m), "--only", "b"]) == 2  # upstream a not committed yet
    assert "upstream results are not committed: b needs a" in capsys.readouterr().out

    assert main(["run", str(m), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "run     a: new (never committed)" in out and "run     b: upstream will run first: a" in out
    assert [lines(c[s]) for s in "abc"] == [0, 0, 0]

    assert main(["run", str(m), "--until", "b"]) == 0
    capsys.readouterr()
    assert [lines(c[s]) for s in "abc"] == [1, 1, 0]
    assert trace(tmp_path / "t.work")["steps"]["c"]["status"] == "not_selected"

    assert main(["run", str(m), "--only", "b", "--force", "b", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "run     b: forced (--force)" in out
    assert [lines(c[s]) for s in "abc"] == [1, 2, 0]

    assert main(["run", str(m), "--dry-run", "--events", "-"]) == 0
    plan = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(p["step"], p["action"]) for p in plan] == [("a", "skip"), ("b", "skip"), ("c", "run")]

    assert main(["run", str(m), "--events", "-"]) == 0
    evs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert evs[0]["event"] == "run_start" and evs[-1]["event"] == "run_end" and evs[-1]["exit_code"] == 0
    assert [lines(c[s]) for s in "abc"] == [1, 2, 1]

    assert main(["run", str(m), "--only", "nope"]) == 2
    assert "unknown step(s) nope" in capsys.readouterr().out


def test_runner_imports_neither_torch_nor_workers(tmp_path, schemas):
    m = write_manifest(tmp_path, fixture_manifest([step("a", outputs={"o": "a"})]))
    code = (
        "import sys, io\n"
        "from bridge.manifest import load\n"
        "from bridge.runner import Runner\n"
        f"r = Runner(load({str(m)!r}), console=io.StringIO())\n"
        "assert r.run() == 0\n"
        "bad = sorted(n for n in sys.modules if n == 'torch' or n.startswith(('torch.', 'workers')))\n"
        "assert not bad, bad\n"
        "print('clean')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=bridge_env(schemas), capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and "clean" in res.stdout, res.stderr


@pytest.mark.parametrize("value", ["nan", "-1", "inf"])
def test_warm_idle_s_must_be_a_number_of_seconds(tmp_path, value, capsys):
    with pytest.raises(SystemExit) as refused:
        main(["run", str(tmp_path / "m.manifest.json"), "--warm-idle-s", value])
    assert refused.value.code == 2 and "--warm-idle-s" in capsys.readouterr().err
