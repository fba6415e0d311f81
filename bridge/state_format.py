"""The state.db format: its tables, its version, and the migration from each older format.

Format 1 (the first runner): one `steps` row per step. Format 2 adds items: `steps` rows are keyed by
(step_id, item), where item -1 is a whole step and 0, 1, ... are the items of a foreach step, and each
attempt records its item. A format-1 database is migrated in place, in one transaction, when a runner of
format 2 opens it (under the workdir lock), so a workdir made by the earlier runner resumes. A database of a
newer format than this runner knows is refused: guessing would lose or repeat work. Format 3 adds the `gate`
column: the quality-gate record of an item that a gate regenerates (its regeneration number and verdicts), so a
resumed run plans the same varied args.
"""

from __future__ import annotations

import sqlite3

STATE_FORMAT = 3
WHOLE_STEP = -1  # the `item` of a row that stands for a whole step

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started_at REAL NOT NULL, ended_at REAL, status TEXT NOT NULL,
    exit_code INTEGER, manifest TEXT NOT NULL, options TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS steps (
    step_id TEXT NOT NULL,
    item INTEGER NOT NULL DEFAULT -1,  -- -1: the whole step; 0, 1, ...: an item of a foreach step
    status TEXT NOT NULL,              -- a bridge.states.State value
    committed_key TEXT,                -- cache key of the committed record (NULL: none)
    components TEXT,                   -- key components of the committed record (for --explain)
    result TEXT, outputs TEXT, committed_dir TEXT, committed_at REAL,
    last_key TEXT, last_error TEXT, updated_at REAL NOT NULL,
    result_file TEXT,                  -- {name, bytes, sha256} of a result kept in .bridge/results/
    gate TEXT,                         -- {base, regeneration, step, verdict, history} of a gated item (bridge/gate.py)
    PRIMARY KEY (step_id, item));
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, step_id TEXT NOT NULL, attempt INTEGER NOT NULL,
    cache_key TEXT, status TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL, exit_code INTEGER,
    error_kind TEXT, message TEXT, retryable INTEGER, wall_s REAL, peak_rss_mb REAL, staging_dir TEXT,
    worker_pid INTEGER, worker_started REAL,  -- the worker process (pid + start time: pids are reused)
    item INTEGER NOT NULL DEFAULT -1, devices TEXT, queue_wait_s REAL);
CREATE TABLE IF NOT EXISTS file_hashes (  -- a memo: valid while the file keeps this size, mtime, inode and ctime
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ino INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL);
"""

#: Columns format 1 gained after its first release; a format-1 database may lack them.
_FORMAT1_LATE_COLUMNS = {"steps": {"result_file": "TEXT"}, "attempts": {"worker_pid": "INTEGER",
                                                                         "worker_started": "REAL"}}
_STEP_COLUMNS_V1 = ("step_id, status, committed_key, components, result, outputs, committed_dir, committed_at, "
                    "last_key, last_error, updated_at, result_file")


class StateFormatError(Exception):
    """state.db is of a format this runner cannot read (newer, or not a number)."""


def open_format(db: sqlite3.Connection) -> int:
    """Create, check or migrate the tables; return the format found before (0: a new database)."""
    found = _stored_format(db)
    if found > STATE_FORMAT:
        raise StateFormatError(f"state.db has format {found}, newer than this runner's {STATE_FORMAT}: "
                               "use the runner that made it (or a newer one)")
    if found == 1:
        _migrate_1_to_2(db)
    if found in (1, 2):
        _migrate_2_to_3(db)
    _renew_hash_memo(db)
    _create_tables(db)
    db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('format', ?)", (str(STATE_FORMAT),))
    return found


def _stored_format(db: sqlite3.Connection) -> int:
    if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone():
        return 0
    row = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
    if row is None:
        return 1 if db.execute("SELECT 1 FROM sqlite_master WHERE name='steps'").fetchone() else 0
    try:
        return int(row[0])
    except ValueError:
        raise StateFormatError(f"state.db format {row[0]!r} is not a number") from None


def _create_tables(db: sqlite3.Connection) -> None:
    plain = "\n".join(line.split("--")[0] for line in SCHEMA.splitlines())  # comments may follow a ';'
    for statement in plain.split(";"):
        if statement.strip():
            db.execute(statement)


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _renew_hash_memo(db: sqlite3.Connection) -> None:
    """A memo keyed by (path, size, mtime) only (before inode and ctime counted) is dropped: it is a cache."""
    present = _columns(db, "file_hashes")
    if present and "ctime_ns" not in present:
        db.execute("DROP TABLE file_hashes")


def _migrate_1_to_2(db: sqlite3.Connection) -> None:
    """Rebuild `steps` with the (step_id, item) key (SQLite cannot change a primary key in place)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for table, columns in _FORMAT1_LATE_COLUMNS.items():
            present = _columns(db, table)
            for name, kind in columns.items():
                if name not in present:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        db.execute("ALTER TABLE steps RENAME TO steps_format1")
        _create_tables(db)  # the new `steps`; executescript would commit the transaction half way
        db.execute(f"INSERT INTO steps({_STEP_COLUMNS_V1}, item) SELECT {_STEP_COLUMNS_V1}, -1 FROM steps_format1")
        db.execute("DROP TABLE steps_format1")
        present = _columns(db, "attempts")
        for name, kind in (("item", "INTEGER NOT NULL DEFAULT -1"), ("devices", "TEXT"), ("queue_wait_s", "REAL")):
            if name not in present:
                db.execute(f"ALTER TABLE attempts ADD COLUMN {name} {kind}")
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('format', ?)", (str(STATE_FORMAT),))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _migrate_2_to_3(db: sqlite3.Connection) -> None:
    """Add the `gate` column (a format-1 database migrated just now has it already)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if "gate" not in _columns(db, "steps"):
            db.execute("ALTER TABLE steps ADD COLUMN gate TEXT")
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('format', ?)", (str(STATE_FORMAT),))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
