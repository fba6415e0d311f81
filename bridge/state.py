"""Run state in SQLite (WORKDIR/.bridge/state.db, WAL): committed unit records, every attempt, runs.

A unit is a whole step (item -1) or one item of a foreach step (item 0, 1, ...); each has its own row, cache
key and commit. Every write is in the WAL before the runner moves on, so a killed runner (even SIGKILL) loses
nothing written; a commit is also fsynced (synchronous=FULL for that transaction, which syncs the WAL up to it),
so a committed record survives a power loss too. The bookkeeping in between (running, attempt start, worker
pid) is not fsynced one by one: after a power loss the worst case is a unit that runs again. A commit writes the unit's
record and its attempt in one transaction, so a committed unit never has an attempt that reads `running` or
`abandoned`. Results larger than INLINE_RESULT_BYTES live in `.bridge/results/` (the row keeps name, size and
sha256), so one big answer does not grow the database by its size. Only the coordinator thread writes.
The format (tables, version, migration) is in `state_format`, the record values in `state_records`, results
kept in files in `state_results`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import state_results
from .state_format import STATE_FORMAT, WHOLE_STEP, StateFormatError, open_format
from .state_records import STEP_COLUMNS, AbandonedAttempt, AttemptEnd, StepRecord, dump_json, load_json, record_from_row
from .state_results import INLINE_RESULT_BYTES

__all__ = ["INLINE_RESULT_BYTES", "STATE_FORMAT", "WHOLE_STEP", "AbandonedAttempt", "AttemptEnd", "StateDB",
           "StateFormatError", "StepRecord"]


class StateDB:
    def __init__(self, path: Path, results_dir: Path, *, snapshot: bool = False):
        """`snapshot` (a dry run, which holds no lock): plan from an in-memory copy of the database, read
        through a read-only connection; migrating it, and what the planner writes (the hash memo), touch the
        copy only."""
        self.path = path
        self.results_dir = results_dir
        if snapshot:
            self.db = _in_memory_copy(path)
        else:
            self.db = sqlite3.connect(str(path), isolation_level=None, timeout=30, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # see the module doc: commits sync themselves
        try:
            self.migrated_from = open_format(self.db)  # 0: new; 1 or 2: migrated from that format; 3: current
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _transaction(self, durable: bool = False) -> Iterator[None]:
        """One transaction; `durable`: fsynced at COMMIT (with every WAL frame before it)."""
        if durable:
            self.db.execute("PRAGMA synchronous=FULL")
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        finally:
            if durable:
                self.db.execute("PRAGMA synchronous=NORMAL")

    # runs ---------------------------------------------------------------------------------------------
    def start_run(self, run_id: str, manifest: str, options: dict[str, Any]) -> None:
        self.db.execute("INSERT INTO runs(run_id, started_at, status, manifest, options) VALUES (?,?,?,?,?)",
                        (run_id, time.time(), "running", manifest, json.dumps(options)))

    def end_run(self, run_id: str, status: str, exit_code: int) -> None:
        self.db.execute("UPDATE runs SET ended_at=?, status=?, exit_code=? WHERE run_id=?",
                        (time.time(), status, exit_code, run_id))

    def recover_abandoned(self) -> list[AbandonedAttempt]:
        """Attempts left `running` by a runner that died: mark them abandoned and return them."""
        rows = self.db.execute("SELECT run_id, step_id, attempt, worker_pid, worker_started, item FROM attempts "
                               "WHERE status='running'").fetchall()
        now = time.time()
        with self._transaction():
            self.db.execute("UPDATE attempts SET status='abandoned', ended_at=?, error_kind='interrupted', "
                            "message='the runner stopped while this attempt ran' WHERE status='running'", (now,))
            self.db.execute("UPDATE steps SET status='interrupted', updated_at=? WHERE status IN ('running', 'waiting')",
                            (now,))
            self.db.execute("UPDATE runs SET status='abandoned', ended_at=? WHERE status='running'", (now,))
        return [AbandonedAttempt(*row) for row in rows]

    def settle_running(self, run_id: str, status: str, error: dict[str, Any]) -> None:
        """After an uncaught exception: what this run left `running` gets the real outcome instead."""
        now = time.time()
        with self._transaction():
            self.db.execute("UPDATE attempts SET status=?, ended_at=?, error_kind=?, message=?, retryable=0 "
                            "WHERE run_id=? AND status='running'", (status, now, error["kind"], error["message"], run_id))
            self.db.execute("UPDATE steps SET status=?, last_error=?, updated_at=? "
                            "WHERE status IN ('running', 'waiting')",
                            (status, dump_json(error), now))

    # steps --------------------------------------------------------------------------------------------
    def step(self, step_id: str, item: int = WHOLE_STEP) -> StepRecord | None:
        row = self.db.execute(f"SELECT {STEP_COLUMNS} FROM steps WHERE step_id=? AND item=?",
                              (step_id, item)).fetchone()
        return None if row is None else record_from_row(row)

    def step_items(self, step_id: str) -> dict[int, StepRecord]:
        """Every item row of a foreach step, by item."""
        rows = self.db.execute(f"SELECT {STEP_COLUMNS} FROM steps WHERE step_id=? AND item>=0",
                               (step_id,)).fetchall()
        return {row[10]: record_from_row(row) for row in rows}

    def committed_items_with_key(self, step_id: str, key: str) -> list[StepRecord]:
        rows = self.db.execute(f"SELECT {STEP_COLUMNS} FROM steps WHERE step_id=? AND item>=0 "
                               "AND committed_key=? ORDER BY item", (step_id, key)).fetchall()
        return [record_from_row(row) for row in rows]

    def forget_items(self, step_id: str, from_item: int) -> None:
        """Item rows at or past `from_item` (the list got shorter), or every item row (`from_item` 0)."""
        self.db.execute("DELETE FROM steps WHERE step_id=? AND item>=?", (step_id, from_item))

    def forget_whole_step(self, step_id: str) -> None:
        self.db.execute("DELETE FROM steps WHERE step_id=? AND item=-1", (step_id,))

    def _upsert_status(self, step_id: str, item: int, status: str, last_key: str | None, last_error: Any) -> None:
        self.db.execute(
            "INSERT INTO steps(step_id, item, status, last_key, last_error, updated_at) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT(step_id, item) DO UPDATE SET status=excluded.status, last_key=excluded.last_key, "
            "last_error=excluded.last_error, updated_at=excluded.updated_at",
            (step_id, item, status, last_key, dump_json(last_error), time.time()))

    def mark_running(self, step_id: str, key: str, item: int = WHOLE_STEP) -> None:
        self._upsert_status(step_id, item, "running", key, None)

    def mark_waiting(self, step_id: str, key: str, item: int = WHOLE_STEP) -> None:
        """Decided to run; queued for a slot (or backing off before a retry)."""
        self._upsert_status(step_id, item, "waiting", key, None)

    def mark_failed(self, step_id: str, key: str | None, error: dict[str, Any], status: str = "failed",
                    item: int = WHOLE_STEP) -> None:
        self._upsert_status(step_id, item, status, key, error)

    def commit_step(self, step_id: str, key: str, components: dict[str, Any], result: Any,
                    outputs: list[dict[str, Any]], committed_dir: str, attempt_row: int | None, end: AttemptEnd,
                    item: int = WHOLE_STEP) -> None:
        """The unit's committed record and the end of the attempt that made it (None: reused, no attempt),
        in one transaction."""
        prefix = state_results.result_prefix(step_id, item)
        inline, result_file = state_results.store_result(self.results_dir, prefix, result)
        now = time.time()
        with self._transaction(durable=True):
            self.db.execute(
                "INSERT INTO steps(step_id, item, status, committed_key, components, result, outputs, committed_dir, "
                "committed_at, last_key, last_error, updated_at, result_file) VALUES (?,?,?,?,?,?,?,?,?,?,NULL,?,?) "
                "ON CONFLICT(step_id, item) DO UPDATE SET status=excluded.status, committed_key=excluded.committed_key, "
                "components=excluded.components, result=excluded.result, outputs=excluded.outputs, "
                "committed_dir=excluded.committed_dir, committed_at=excluded.committed_at, "
                "last_key=excluded.last_key, last_error=NULL, updated_at=excluded.updated_at, "
                "result_file=excluded.result_file",
                (step_id, item, "committed", key, dump_json(components), inline, dump_json(outputs), committed_dir, now, key,
                 now, dump_json(result_file)))
            if attempt_row is not None:
                self._end_attempt(attempt_row, end)
        state_results.drop_result_files(self.results_dir, prefix, keep=result_file["name"] if result_file else None)

    def gate_record(self, step_id: str, item: int) -> dict[str, Any] | None:
        """The quality-gate record of an item a gate regenerates (see bridge/gate_keeper.py), or None."""
        row = self.db.execute("SELECT gate FROM steps WHERE step_id=? AND item=?", (step_id, item)).fetchone()
        return None if row is None else load_json(row[0])

    def set_gate_record(self, step_id: str, item: int, record: dict[str, Any]) -> None:
        """Written before the regeneration it announces is decided, so a killed run resumes from it."""
        self.db.execute("UPDATE steps SET gate=?, updated_at=? WHERE step_id=? AND item=?",
                        (dump_json(record), time.time(), step_id, item))

    def mark_cache_hit(self, step_id: str, item: int = WHOLE_STEP) -> None:
        # The WHERE clause skips rows that already say so: no write, no fsync, for each of many cached steps.
        self.db.execute("UPDATE steps SET status='committed', last_key=committed_key, last_error=NULL, updated_at=? "
                        "WHERE step_id=? AND item=? AND (status != 'committed' OR last_error IS NOT NULL "
                        "OR last_key IS NOT committed_key)", (time.time(), step_id, item))

    # results kept in files (bridge/state_results.py) ------------------------------------------------------
    def load_result(self, rec: StepRecord) -> str | None:
        """Read a result kept in a file into `rec.result`; None when it verifies, else why it does not."""
        return state_results.load_result(self.results_dir, rec)

    def prune_result_files(self) -> None:
        """Result files no record names (left by a runner killed between writing one and committing)."""
        names = (load_json(row[0])["name"] for row in self.db.execute("SELECT result_file FROM steps "
                                                                      "WHERE result_file IS NOT NULL"))
        state_results.drop_unnamed_result_files(self.results_dir, names)

    # attempts -----------------------------------------------------------------------------------------
    def start_attempt(self, run_id: str, step_id: str, attempt: int, key: str, staging_dir: str, *,
                      item: int = WHOLE_STEP, devices: list[str] | None = None, queue_wait_s: float | None = None) -> int:
        cur = self.db.execute("INSERT INTO attempts(run_id, step_id, attempt, cache_key, status, started_at, "
                              "staging_dir, item, devices, queue_wait_s) VALUES (?,?,?,?,?,?,?,?,?,?)",
                              (run_id, step_id, attempt, key, "running", time.time(), staging_dir, item,
                               dump_json(devices), queue_wait_s))
        return int(cur.lastrowid)

    def set_attempt_worker(self, row_id: int, pid: int, started: float | None) -> None:
        self.db.execute("UPDATE attempts SET worker_pid=?, worker_started=? WHERE id=?", (pid, started, row_id))

    def end_attempt(self, row_id: int, end: AttemptEnd) -> None:
        self._end_attempt(row_id, end)

    def _end_attempt(self, row_id: int, end: AttemptEnd) -> None:
        self.db.execute("UPDATE attempts SET status=?, ended_at=?, exit_code=?, error_kind=?, message=?, retryable=?, "
                        "wall_s=?, peak_rss_mb=? WHERE id=?",
                        (end.status, time.time(), end.exit_code, end.error_kind, end.message,
                         None if end.retryable is None else int(end.retryable), end.wall_s, end.peak_rss_mb, row_id))

    def attempts(self, step_id: str | None = None) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT * FROM attempts" + (" WHERE step_id=?" if step_id else "") + " ORDER BY id",
                              (step_id,) if step_id else ())
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    # input file hashes (content sha256, memoised by size + mtime) --------------------------------------
    def cached_hash(self, path: str, st: os.stat_result) -> str | None:
        """The sha256 memoised for `path` while it has this stat: size, mtime, inode and ctime. The ctime
        cannot be set from user space, so a file rewritten in place with its old size and mtime restored
        (os.utime) is hashed again."""
        row = self.db.execute("SELECT sha256 FROM file_hashes WHERE path=? AND size=? AND mtime_ns=? AND ino=? "
                              "AND ctime_ns=?", (path, *_stamp(st))).fetchone()
        return row[0] if row else None

    def forget_hashes_under(self, directory: str) -> None:
        """Memo rows of the files in `directory` (a committed directory being replaced): they are gone."""
        prefix = directory + os.sep
        self.db.execute("DELETE FROM file_hashes WHERE path=? OR substr(path, 1, ?)=?",
                        (directory, len(prefix), prefix))

    def store_hash(self, path: str, st: os.stat_result, sha256: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO file_hashes(path, size, mtime_ns, ino, ctime_ns, sha256) "
                        "VALUES (?,?,?,?,?,?)", (path, *_stamp(st), sha256))


def _in_memory_copy(path: Path) -> sqlite3.Connection:
    copy = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    if path.exists():
        source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            source.backup(copy)
        finally:
            source.close()
    return copy


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns
