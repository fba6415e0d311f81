"""The .NET client's behaviour against real workers: generated types over real envelopes, the retry schedule,
timeouts and cancellation that kill the whole process tree (one-shot and warm), and the warm pool."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path

import psutil
import pytest
from test_csharp_host import FIXTURE_ARGV, host, host_exe  # noqa: F401  (host_exe: the module's compiled host)
from test_csharp_host import pytestmark as needs_mono
from worker_process import FIXTURE, WHISPER, run, whisper_args

pytestmark = needs_mono


def started(attempt: dict) -> datetime:
    return datetime.fromisoformat(attempt["started_utc"].rstrip("Z")[:26])


def gone(pid: int) -> bool:
    """Killed: no such process, or a zombie waiting for init to reap it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_generated_types_parse_every_envelope_a_worker_prints(host_exe, tmp_path):  # noqa: F811
    envelopes = []
    cases = [{"mode": "ok", "outputs": {"a.txt": "x"}}, {"mode": "raise"}, {"mode": 7}]
    cases += [{"mode": "fail", "kind": kind} for kind in ("invalid_input", "model_unavailable", "resource",
                                                         "transient", "external")]
    for i, case in enumerate(cases):
        work = tmp_path / f"case{i}"
        work.mkdir()
        envelopes.append(run(FIXTURE, work, {"output_dir": str(work / "o"), **case})[1])
    (tmp_path / "w").mkdir()
    envelopes.append(run(WHISPER, tmp_path / "w", whisper_args(tmp_path, audio_path="/no/such.ogg"))[1])
    lines = tmp_path / "envelopes.jsonl"
    lines.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in envelopes), encoding="utf-8")
    proc = subprocess.run(["mono", str(host_exe), "parse", str(lines)], capture_output=True, text=True, check=True)
    parsed = json.loads(proc.stdout)["envelopes"]
    expected = [{"success": e["success"], "worker": e["worker"], "kind": (e["error"] or {}).get("kind"),
                 "retryable": (e["error"] or {}).get("retryable"), "outputs": len(e.get("outputs") or []),
                 "run_s": (e["metrics"] or {}).get("run_s")} for e in envelopes]
    assert parsed == expected
    assert {p["kind"] for p in parsed} == {None, "internal", "invalid_input", "model_unavailable", "resource",
                                           "transient", "external"}


def test_retries_follow_the_schedule_until_success(host_exe, tmp_path):  # noqa: F811
    count = tmp_path / "count.txt"
    args = {"output_dir": str(tmp_path / "o"), "mode": "fail", "kind": "transient", "fail_times": 2,
            "count_file": str(count)}
    attempts = host(host_exe, "retry", args, FIXTURE_ARGV, tmp_path, extra=("0.6,1.2", "0"))["attempts"]
    assert [a["success"] for a in attempts] == [False, False, True]
    assert len(count.read_text().splitlines()) == 3
    gaps = [(started(b) - started(a)).total_seconds() for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps[0] >= 0.6 and gaps[1] >= 1.2  # each attempt waited at least its delay after the previous start


@pytest.mark.parametrize("args, attempts", [
    ({"mode": "fail", "kind": "invalid_input", "retryable": True}, 1),  # never retried, whatever it says
    ({"mode": "fail", "kind": "model_unavailable"}, 1),  # not retryable by default
    ({"mode": "exit_no_json", "exit_code": 1}, 4),  # a crash is worth another try: 1 + 3 retries
])
def test_what_is_retried(host_exe, tmp_path, args, attempts):  # noqa: F811
    report = host(host_exe, "retry", {"output_dir": str(tmp_path / "o"), **args}, FIXTURE_ARGV, tmp_path,
                  extra=("0,0,0", "0"))
    assert len(report["attempts"]) == attempts


def hung_args(tmp_path: Path) -> dict:
    return {"output_dir": str(tmp_path / "o"), "mode": "spawn_hang", "sleep_s": 120,
            "child_pid_file": str(tmp_path / "child.pid")}


def test_a_oneshot_timeout_kills_the_worker_and_its_children(host_exe, tmp_path):  # noqa: F811
    report = host(host_exe, "oneshot", hung_args(tmp_path), FIXTURE_ARGV, tmp_path, timeout_s=3)
    assert report["timed_out"] is True and report["should_retry"] is True
    assert gone(int((tmp_path / "child.pid").read_text()))


def test_cancellation_kills_the_running_attempt_and_stops_retrying(host_exe, tmp_path):  # noqa: F811
    report = host(host_exe, "retry", hung_args(tmp_path), FIXTURE_ARGV, tmp_path, timeout_s=60,
                  extra=("0,0,0", "3"))
    assert len(report["attempts"]) == 1 and report["attempts"][0]["cancelled"] is True
    assert report["attempts"][0]["should_retry"] is False
    assert gone(int((tmp_path / "child.pid").read_text()))


def test_a_hung_warm_request_kills_the_tree_and_restarts_the_worker(host_exe, tmp_path):  # noqa: F811
    report = host(host_exe, "warm-timeout", hung_args(tmp_path), FIXTURE_ARGV, tmp_path, timeout_s=3)
    assert report["hung"]["timed_out"] is True and report["restarts"] == 1
    assert gone(int((tmp_path / "child.pid").read_text())) and gone(report["first_pid"])
    assert report["second_pid"] != report["first_pid"]
    assert json.loads(report["ping_after"])["event"] == "pong" and report["exit_code"] == 0


def test_warm_pool_reuses_restarts_and_shuts_idle_workers_down(host_exe, tmp_path):  # noqa: F811
    report = host(host_exe, "pool", {"output_dir": str(tmp_path / "o"), "echo": "x"}, FIXTURE_ARGV, tmp_path,
                  timeout_s=2)
    assert report["same_worker_reused"] is True and report["other_model_other_worker"] is True
    assert report["first"]["success"] is True and report["after_kill"]["success"] is True
    assert report["restarted"] is True and report["started"] == 3  # model-a, model-b, model-a again
    assert report["count_after_idle"] == 0

