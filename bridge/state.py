"""Run state in SQLite (WORKDIR/.bridge/state.db, WAL): committed step records, every attempt, runs.

Every write is its own transaction with synchronous=FULL: a record is durable before the runner moves on
(a cache record that silently failed to write is how resume loses work).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started_at REAL NOT NULL, ended_at REAL, status TEXT NOT NULL,
    exit_code INTEGER, manifest TEXT NOT NULL, options TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS steps (
    step_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,              -- committed | failed | running | interrupted
    committed_key TEXT,                -- cache key of the committed record (NULL: none)
    components TEXT,                   -- key components of the committed record (for --explain)
    result TEXT, outputs TEXT, committed_dir TEXT, committed_at REAL,
    last_key TEXT, last_error TEXT, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, step_id TEXT NOT NULL, attempt INTEGER NOT NULL,
    cache_key TEXT, status TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL, exit_code INTEGER,
    error_kind TEXT, message TEXT, retryable INTEGER, wall_s REAL, peak_rss_mb REAL, staging_dir TEXT);
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL);
"""

STATE_FORMAT = "1"


@dataclass
class StepRecord:
    step_id: str
    status: str
    committed_key: str | None
    components: dict[str, Any] | None
    result: dict[str, Any] | None
    outputs: list[dict[str, Any]]
    committed_dir: str | None
    last_key: str | None
    last_error: dict[str, Any] | None

    @property
    def committed(self) -> bool:
        return self.committed_key is not None


class StateDB:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(str(path), isolation_level=None, timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self.db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('format', ?)", (STATE_FORMAT,))

    def close(self) -> None:
        self.db.close()

    # runs ---------------------------------------------------------------------------------------------
    def start_run(self, run_id: str, manifest: str, options: dict[str, Any]) -> None:
        self.db.execute("INSERT INTO runs(run_id, started_at, status, manifest, options) VALUES (?,?,?,?,?)",
                        (run_id, time.time(), "running", manifest, json.dumps(options)))

    def end_run(self, run_id: str, status: str, exit_code: int) -> None:
        self.db.execute("UPDATE runs SET ended_at=?, status=?, exit_code=? WHERE run_id=?",
                        (time.time(), status, exit_code, run_id))

    def recover_abandoned(self) -> list[tuple[str, str, int]]:
        """Attempts left `running` by a runner that died: mark them abandoned. Returns (run, step, attempt)."""
        rows = self.db.execute("SELECT run_id, step_id, attempt FROM attempts WHERE status='running'").fetchall()
        now = time.time()
        self.db.execute("UPDATE attempts SET status='abandoned', ended_at=?, error_kind='interrupted', "
                        "message='the runner stopped while this attempt ran' WHERE status='running'", (now,))
        self.db.execute("UPDATE steps SET status='interrupted', updated_at=? WHERE status='running'", (now,))
        self.db.execute("UPDATE runs SET status='abandoned', ended_at=? WHERE status='running'", (now,))
        return [tuple(r) for r in rows]

    # steps --------------------------------------------------------------------------------------------
    def step(self, step_id: str) -> StepRecord | None:
        row = self.db.execute("SELECT step_id, status, committed_key, components, result, outputs, committed_dir, "
                              "last_key, last_error FROM steps WHERE step_id=?", (step_id,)).fetchone()
        if row is None:
            return None
        return StepRecord(step_id=row[0], status=row[1], committed_key=row[2], components=_load(row[3]),
                          result=_load(row[4]), outputs=_load(row[5]) or [], committed_dir=row[6],
                          last_key=row[7], last_error=_load(row[8]))

    def _upsert_status(self, step_id: str, status: str, last_key: str | None, last_error: Any) -> None:
        self.db.execute(
            "INSERT INTO steps(step_id, status, last_key, last_error, updated_at) VALUES (?,?,?,?,?) "
            "ON CONFLICT(step_id) DO UPDATE SET status=excluded.status, last_key=excluded.last_key, "
            "last_error=excluded.last_error, updated_at=excluded.updated_at",
            (step_id, status, last_key, _dump(last_error), time.time()))

    def mark_running(self, step_id: str, key: str) -> None:
        self._upsert_status(step_id, "running", key, None)

    def mark_failed(self, step_id: str, key: str | None, error: dict[str, Any], status: str = "failed") -> None:
        self._upsert_status(step_id, status, key, error)

    def commit_step(self, step_id: str, key: str, components: dict[str, Any], result: Any,
                    outputs: list[dict[str, Any]], committed_dir: str) -> None:
        now = time.time()
        self.db.execute(
            "INSERT INTO steps(step_id, status, committed_key, components, result, outputs, committed_dir, "
            "committed_at, last_key, last_error, updated_at) VALUES (?,?,?,?,?,?,?,?,?,NULL,?) "
            "ON CONFLICT(step_id) DO UPDATE SET status=excluded.status, committed_key=excluded.committed_key, "
            "components=excluded.components, result=excluded.result, outputs=excluded.outputs, "
            "committed_dir=excluded.committed_dir, committed_at=excluded.committed_at, last_key=excluded.last_key, "
            "last_error=NULL, updated_at=excluded.updated_at",
            (step_id, "committed", key, _dump(components), _dump(result), _dump(outputs), committed_dir, now, key, now))

    def mark_cache_hit(self, step_id: str) -> None:
        self.db.execute("UPDATE steps SET status='committed', last_key=committed_key, last_error=NULL, updated_at=? "
                        "WHERE step_id=?", (time.time(), step_id))

    # attempts -----------------------------------------------------------------------------------------
    def start_attempt(self, run_id: str, step_id: str, attempt: int, key: str, staging_dir: str) -> int:
        cur = self.db.execute("INSERT INTO attempts(run_id, step_id, attempt, cache_key, status, started_at, "
                              "staging_dir) VALUES (?,?,?,?,?,?,?)",
                              (run_id, step_id, attempt, key, "running", time.time(), staging_dir))
        return int(cur.lastrowid)

    def end_attempt(self, row_id: int, status: str, exit_code: int | None, error_kind: str | None,
                    message: str | None, retryable: bool | None, wall_s: float, peak_rss_mb: float | None) -> None:
        self.db.execute("UPDATE attempts SET status=?, ended_at=?, exit_code=?, error_kind=?, message=?, retryable=?, "
                        "wall_s=?, peak_rss_mb=? WHERE id=?",
                        (status, time.time(), exit_code, error_kind, message,
                         None if retryable is None else int(retryable), wall_s, peak_rss_mb, row_id))

    def attempts(self, step_id: str | None = None) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT * FROM attempts" + (" WHERE step_id=?" if step_id else "") + " ORDER BY id",
                              (step_id,) if step_id else ())
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    # input file hashes (content sha256, memoised by size + mtime) --------------------------------------
    def cached_hash(self, path: str, size: int, mtime_ns: int) -> str | None:
        row = self.db.execute("SELECT sha256 FROM file_hashes WHERE path=? AND size=? AND mtime_ns=?",
                              (path, size, mtime_ns)).fetchone()
        return row[0] if row else None

    def store_hash(self, path: str, size: int, mtime_ns: int, sha256: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO file_hashes(path, size, mtime_ns, sha256) VALUES (?,?,?,?)",
                        (path, size, mtime_ns, sha256))


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)
