"""The runner never touches anything outside its workdir (issue 9: D4, D5, D6, D7).

A planted symbolic link (or hard link) inside the workdir must not make the runner delete, truncate or write
a file elsewhere: the run is refused with exit 2 and the link's target is left exactly as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bridge_helpers import bare_manifest, events, run_runner, schema_dir, trace, write_manifest

from bridge.cli import main
from bridge.runner import EXIT_INVALID, EXIT_OK, EXIT_STEP_FAILED


@pytest.fixture
def schemas(tmp_path_factory) -> Path:
    return schema_dir(tmp_path_factory.mktemp("schemas"))


def _snapshot(path: Path) -> dict[str, bytes]:
    """Every file under `path` (or `path` itself) with its content."""
    if path.is_file():
        return {".": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(path.rglob("*"))}


def _victim_dir(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    (victim / "precious").mkdir(parents=True)
    (victim / "precious" / "f.txt").write_text("keep me")
    (victim / "g.txt").write_text("keep me too")
    return victim


# (path inside the workdir, kind of planted link). Before the fix each of these deleted, truncated or wrote
# into the target: cleanup emptied a linked staging/trash, the lock truncated its target, state.db, events,
# attempts and steps were opened or written through the link.
PLANTED = [
    (".bridge/staging", "dir"),
    (".bridge/trash", "dir"),
    (".bridge/attempts", "dir"),
    ("steps", "dir"),
    (".bridge", "dir"),
    (".bridge/lock", "file"),
    (".bridge/state.db", "file"),
    ("events.jsonl", "file"),
]


@pytest.mark.parametrize(("inside", "kind"), PLANTED)
def test_symlink_inside_the_workdir_is_refused_and_its_target_untouched(tmp_path, capsys, inside, kind):
    m = write_manifest(tmp_path, bare_manifest([{"id": "a", "worker": "bare", "args": {"outputs": {"o": "x"}}}]))
    work = tmp_path / "t.work"
    link = work / inside
    link.parent.mkdir(parents=True, exist_ok=True)
    if kind == "dir":
        target = _victim_dir(tmp_path)
        if inside == ".bridge/staging":
            (target / "a-1-deadbeef").mkdir()  # looks like a left-over attempt: cleanup used to delete it
    else:
        target = tmp_path / "victim.txt"
        target.write_text("keep me")
    link.symlink_to(target, target_is_directory=kind == "dir")
    before = _snapshot(target)

    code = main(["run", str(m)])
    err = capsys.readouterr()
    assert code == EXIT_INVALID, err
    text = err.out + err.err
    assert "symbolic link" in text and inside in text and "Traceback" not in text
    assert _snapshot(target) == before
    assert link.is_symlink()  # refused, not "repaired": the user decides what the link was for


def test_lock_that_is_a_hard_link_is_never_truncated(tmp_path, capsys):
    m = write_manifest(tmp_path, bare_manifest([{"id": "a", "worker": "bare"}]))
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "t.work" / ".bridge").mkdir(parents=True)
    os.link(victim, tmp_path / "t.work" / ".bridge" / "lock")

    assert main(["run", str(m)]) == EXIT_INVALID
    err = capsys.readouterr()
    assert "hard link" in err.out + err.err
    assert victim.read_text() == "keep me"


def test_a_committed_dir_replaced_by_a_symlink_is_not_trusted_and_only_the_link_is_removed(tmp_path, schemas):
    """steps/ID planted as a link to a copy of the real commit: the outputs "verify" through the link, but a
    link is not a commit. The step runs again; the link (not its target) goes to the trash and is removed."""
    doc = bare_manifest([{"id": "a", "worker": "bare", "args": {"outputs": {"o": "x"}}}])
    m = write_manifest(tmp_path, doc)
    assert run_runner(m, schemas)[0] == EXIT_OK
    committed = tmp_path / "t.work" / "steps" / "a"
    elsewhere = tmp_path / "elsewhere"
    os.rename(committed, elsewhere)
    committed.symlink_to(elsewhere, target_is_directory=True)
    before = _snapshot(elsewhere)

    code, out, _ = run_runner(m, schemas, explain=True)
    assert code == EXIT_OK, out
    assert "run     a: output missing: committed directory" in out
    assert _snapshot(elsewhere) == before
    assert not committed.is_symlink() and (committed / "o").read_text() == "x"
    assert not list((tmp_path / "t.work" / ".bridge" / "trash").iterdir())


@pytest.mark.parametrize("layout", ["file", "under_a_file"])
def test_workdir_that_is_a_file_or_cannot_be_created_exits_2(tmp_path, capsys, layout):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    workdir = blocker if layout == "file" else blocker / "sub" / "work"
    m = write_manifest(tmp_path, bare_manifest([{"id": "a", "worker": "bare"}], workdir=str(workdir)))

    assert main(["run", str(m)]) == EXIT_INVALID
    captured = capsys.readouterr()
    err = captured.out + captured.err
    assert str(workdir) in err and "Traceback" not in err
    assert ("not a directory" in err.lower()) or ("exists" in err.lower())
    assert blocker.read_text() == "a file, not a directory"


def test_special_files_in_args_count_by_name_and_an_unreadable_file_fails_its_step(tmp_path, schemas):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    doc = bare_manifest([
        {"id": "fifo", "worker": "bare", "args": {"echo": str(fifo)}},
        {"id": "device", "worker": "bare", "args": {"echo": "/dev/zero"}},
        {"id": "mem", "worker": "bare", "args": {"echo": "/proc/self/mem"}},
        {"id": "after", "worker": "bare", "args": {"outputs": {"o": "independent"}}},
    ])
    m = write_manifest(tmp_path, doc)

    code, out, _ = run_runner(m, schemas)
    assert code == EXIT_STEP_FAILED, out
    steps = trace(tmp_path / "t.work")["steps"]
    assert {s: steps[s]["status"] for s in steps} == {"fifo": "committed", "device": "committed",
                                                      "mem": "failed", "after": "committed"}
    error = steps["mem"]["error"]
    assert error["kind"] == "input_unreadable" and "/mem" in error["message"] and error["retryable"] is False
    failed = [e for e in events(tmp_path / "t.work") if e["event"] == "step_failed"]
    assert [e["step"] for e in failed] == ["mem"] and failed[0]["exit_code"] is None
