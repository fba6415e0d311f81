"""`storybridge clean`: what a resume never needs goes; what it needs stays; locks and links are respected."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from bridge_helpers import fixture_manifest, lines, run_runner, schema_dir, trace, write_manifest

from bridge import front
from bridge.lock import WorkdirLock
from bridge.retention import Policy, clean, parse_age

#: Files whose size changes merely by opening the state database (WAL), or by taking the lock.
_VOLATILE = {".bridge/state.db", ".bridge/state.db-wal", ".bridge/state.db-shm", ".bridge/lock"}


@pytest.fixture
def schemas(tmp_path_factory) -> Path:
    return schema_dir(tmp_path_factory.mktemp("schemas"))


def step(sid: str, count: Path, **args) -> dict:
    return {"id": sid, "worker": "fixture", "args": {"count_file": str(count), **args},
            "ignore_input_files": ["count_file"]}


def snapshot(root: Path) -> dict[str, int]:
    """Every entry below `root` (links not followed) -> its lstat size, without the volatile state files."""
    found = {}
    for top, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = Path(top, name)
            rel = path.relative_to(root).as_posix()
            if rel not in _VOLATILE:
                found[rel] = os.lstat(path).st_size
    return found


@pytest.fixture
def workdir(tmp_path, schemas):
    """Two runs (the second forces `a`; `b` needed a retry in the first), then debris of every kind."""
    counts = {s: tmp_path / f"{s}.count" for s in "ab"}
    m = write_manifest(tmp_path, fixture_manifest([
        step("a", counts["a"], outputs={"out": "alpha" * 100}),
        step("b", counts["b"], mode="fail", fail_times=1, outputs={"out": "beta"}),
    ], retry={"max_attempts": 2, "backoff_s": [0]}))
    assert run_runner(m, schemas)[0] == 0
    assert run_runner(m, schemas, force={"a"})[0] == 0
    work = tmp_path / "t.work"
    debris = {".bridge/staging/a-1-dead/partial.bin": b"x" * 3000, ".bridge/trash/a-0ld/out": b"y" * 500,
              ".bridge/results/gone.0123456789abcdef.json": b"{}" * 100, "steps/removed_step/out": b"z" * 700}
    for rel, data in debris.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes(data)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    (work / "steps" / "link_out").symlink_to(outside)
    return {"manifest": m, "work": work, "counts": counts, "outside": outside, "schemas": schemas}


def attempt_dirs(work: Path) -> list[str]:
    return sorted(p.name.rsplit("-", 1)[0] for p in (work / ".bridge" / "attempts").iterdir())


def clean_json(capsys, *argv: str) -> tuple[int, dict]:
    code = front.main(["clean", *argv, "--json"])
    out = capsys.readouterr().out
    return code, (json.loads(out) if out.strip() else {})


def test_dry_run_lists_what_would_go_and_its_bytes_and_deletes_nothing(workdir, capsys):
    work = workdir["work"]
    before = snapshot(work)
    code, doc = clean_json(capsys, str(work), "--dry-run")
    assert code == 0 and doc["dry_run"] is True
    assert snapshot(work) == before
    listed = {Path(e["path"]).relative_to(work).as_posix() for e in doc["removed"]}
    assert {".bridge/staging/a-1-dead", ".bridge/trash/a-0ld", ".bridge/results/gone.0123456789abcdef.json",
            "steps/removed_step", "steps/link_out", "events.jsonl"} <= listed
    assert doc["bytes_freed"] == sum(e["bytes"] for e in doc["removed"]) > 3000 + 500 + 200 + 700


def test_clean_frees_what_it_reports_keeps_current_outputs_and_a_resume_is_all_cache_hits(workdir, capsys):
    work, counts = workdir["work"], workdir["counts"]
    outputs = {rel: (work / rel).read_bytes() for rel in ("steps/a/out", "steps/b/out")}
    assert attempt_dirs(work) == ["a-1", "a-1", "b-1", "b-2"]  # a ran in both runs; b twice in the first
    before = snapshot(work)
    code, doc = clean_json(capsys, str(work))  # default: keep the last run's logs
    assert code == 0
    after = snapshot(work)
    assert doc["bytes_freed"] == sum(before.values()) - sum(after.values())
    # the last run's attempt (a-1), and b-2: the attempt that made b's current output in the first run
    assert attempt_dirs(work) == ["a-1", "b-2"]
    assert {json.loads(line)["run_id"] for line in (work / "events.jsonl").read_text().splitlines()} == {
        trace(work)["run_id"]}
    for rel in ("steps/removed_step", "steps/link_out", ".bridge/staging/a-1-dead", ".bridge/trash/a-0ld"):
        assert not os.path.lexists(work / rel)
    assert {rel: (work / rel).read_bytes() for rel in outputs} == outputs
    assert (workdir["outside"] / "precious.txt").read_text() == "keep me"  # the link went, not its target

    ran = (lines(counts["a"]), lines(counts["b"]))
    code, out, _ = run_runner(workdir["manifest"], workdir["schemas"], explain=True)
    assert code == 0, out
    assert (lines(counts["a"]), lines(counts["b"])) == ran  # nothing re-ran
    assert {s["status"] for s in trace(work)["steps"].values()} == {"cached"}


def test_keep_last_zero_drops_every_attempt_log_but_not_the_outputs(workdir, capsys):
    work = workdir["work"]
    assert clean_json(capsys, str(work), "--keep-last", "0")[0] == 0
    assert attempt_dirs(work) == ["a-1", "b-2"]  # only the attempts behind the current outputs
    assert (work / "events.jsonl").read_bytes() == b""
    assert (work / "steps" / "a" / "out").is_file() and (work / "steps" / "b" / "out").is_file()


def test_a_linked_state_db_is_refused_like_run_refuses_it(workdir, tmp_path, capsys):
    work = workdir["work"]
    elsewhere = tmp_path / "elsewhere.db"
    (work / ".bridge" / "state.db").rename(elsewhere)
    for suffix in ("-wal", "-shm"):
        (work / ".bridge" / f"state.db{suffix}").unlink(missing_ok=True)
    (work / ".bridge" / "state.db").symlink_to(elsewhere)
    before, db_before = snapshot(work), elsewhere.read_bytes()
    code, doc = clean_json(capsys, str(work))
    assert code == 2 and doc["ok"] is False and "state.db" in doc["error"]
    assert snapshot(work) == before and elsewhere.read_bytes() == db_before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds rmtree's directory through /proc")
def test_what_cannot_be_removed_is_reported_not_counted_and_exits_1(workdir, capsys, monkeypatch):
    work = workdir["work"]
    stuck = work / ".bridge" / "trash" / "a-0ld" / "out"
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):  # rmtree unlinks by name relative to an open directory (dir_fd)
        dir_fd = kwargs.get("dir_fd")
        where = Path(os.readlink(f"/proc/self/fd/{dir_fd}")) / path if dir_fd is not None else Path(path)
        if where == stuck:  # as an immutable file (chattr +i) would
            raise PermissionError(1, "Operation not permitted")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    code, doc = clean_json(capsys, str(work))
    assert code == 1 and doc["ok"] is False and stuck.exists()
    assert any("a-0ld" in f and "not permitted" in f for f in doc["failed"])
    assert all("a-0ld" in f for f in doc["failed"])  # the file, then its directory ("not empty")
    assert not any(r["path"].endswith("a-0ld") for r in doc["removed"])
    assert not (work / ".bridge" / "staging" / "a-1-dead").exists()  # the rest went


def test_all_removes_committed_outputs_too_and_the_next_run_remakes_them(workdir, capsys):
    work, counts = workdir["work"], workdir["counts"]
    assert clean_json(capsys, str(work), "--all")[0] == 0
    assert list((work / "steps").iterdir()) == []
    ran = (lines(counts["a"]), lines(counts["b"]))
    code, out, _ = run_runner(workdir["manifest"], workdir["schemas"], explain=True)
    assert code == 0 and "output missing" in out
    assert lines(counts["a"]) == ran[0] + 1 and (work / "steps" / "a" / "out").is_file()


def test_refused_while_a_run_holds_the_lock(workdir, capsys):
    work = workdir["work"]
    before = snapshot(work)
    with WorkdirLock(work / ".bridge" / "lock"):
        assert front.main(["clean", str(work)]) == 3
    assert "in use by another runner" in capsys.readouterr().err
    assert snapshot(work) == before


def test_older_than_keeps_what_is_newer(workdir):
    work = workdir["work"]
    policy = Policy(keep_last=0, older_than_s=parse_age("1h"))
    assert clean(work, policy, dry_run=True).removals == []  # everything was made seconds ago
    later = clean(work, policy, dry_run=True, now=time.time() + 2 * 3600)
    assert any(r.path.name == "a-1-dead" for r in later.removals)


def test_a_link_in_place_of_a_runner_directory_is_refused(workdir, capsys):
    work, outside = workdir["work"], workdir["outside"]
    attempts = work / ".bridge" / "attempts"
    for entry in attempts.iterdir():
        for f in entry.iterdir():
            f.unlink()
        entry.rmdir()
    attempts.rmdir()
    attempts.symlink_to(outside)
    assert front.main(["clean", str(work)]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert (outside / "precious.txt").read_text() == "keep me"


def test_not_a_workdir_and_bad_age_are_exit_2(tmp_path, capsys):
    assert front.main(["clean", str(tmp_path)]) == 2
    assert "not a storybridge workdir" in capsys.readouterr().err
    assert front.main(["clean", str(tmp_path), "--older-than", "7 days"]) == 2
    assert front.main(["clean", str(tmp_path), "--keep-last", "-1"]) == 2


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800),
                                               ("2w", 1209600), ("1.5h", 5400)])
def test_parse_age(text, seconds):
    assert parse_age(text) == seconds


def test_report_shows_the_last_run_and_disk_use(workdir, capsys):
    work = workdir["work"]
    assert front.main(["report", str(work), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["steps"]) == {"a", "b"} and doc["disk_bytes"]["outputs"] > 500
    assert front.main(["report", str(workdir["manifest"])]) == 0
    out = capsys.readouterr().out
    assert "committed" in out and "cached" in out and "attempt logs" in out
