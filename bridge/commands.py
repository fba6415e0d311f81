"""The front door's own commands: report, clean, workers, call (run, validate and schema live in bridge.cli).

`workers` and `call` import `workers.runtime` (light: no torch); the runner itself never does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import safefs

EXIT_FAILED = 1  # clean: something could not be removed
EXIT_INVALID = 2
EXIT_LOCKED = 3


def format_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console(file=sys.stdout, width=None if sys.stdout.isatty() else 140, highlight=False).print(table)


# --- clean -------------------------------------------------------------------------------------------------

def clean(opts: argparse.Namespace) -> int:
    from .lock import WorkdirLocked
    from .retention import NotAWorkdir, Policy, clean, parse_age
    from .safefs import UnsafePath
    from .workdir import WorkdirUnusable

    root = Path(opts.workdir).absolute()
    try:
        older = None if opts.older_than is None else parse_age(opts.older_than)
    except ValueError as exc:
        return _clean_refused(opts, root, f"--older-than: {exc}", EXIT_INVALID)
    if opts.keep_last < 0:
        return _clean_refused(opts, root, f"--keep-last: {opts.keep_last} is negative; give 0 or more runs",
                              EXIT_INVALID)
    policy = Policy(keep_last=opts.keep_last, older_than_s=older, include_committed=opts.all)
    try:
        plan = clean(root, policy, dry_run=opts.dry_run)
    except WorkdirLocked as exc:
        return _clean_refused(opts, root, f"[refused] {exc}", EXIT_LOCKED)
    except (NotAWorkdir, UnsafePath, WorkdirUnusable) as exc:
        return _clean_refused(opts, root, f"[unusable workdir] {exc}", EXIT_INVALID)
    entries = [{"path": str(r.path), "bytes": r.bytes, "why": r.why} for r in plan.removals]
    if plan.events_freed:
        entries.append({"path": str(root / "events.jsonl"), "bytes": plan.events_freed,
                        "why": "events of older runs (the file is trimmed, not removed)"})
    code = EXIT_FAILED if plan.failures else 0  # what could not be removed is neither listed nor counted freed
    if opts.json:
        print(json.dumps({"ok": not plan.failures, "workdir": str(root), "dry_run": opts.dry_run,
                          "bytes_freed": plan.bytes_freed, "removed": entries, "failed": plan.failures},
                         ensure_ascii=False))
        return code
    verb = "would free" if opts.dry_run else "freed"
    for e in entries:
        print(f"{'would remove' if opts.dry_run else 'removed'}  {format_bytes(e['bytes']):>10}  "
              f"{Path(e['path']).relative_to(root)}  ({e['why']})")
    for failure in plan.failures:
        print(f"[not removed] {failure}", file=sys.stderr)
    print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {verb} {format_bytes(plan.bytes_freed)} "
          f"({plan.bytes_freed} bytes) in {root}" + (f"; {len(plan.failures)} could not be removed"
                                                     if plan.failures else ""))
    return code


def _clean_refused(opts: argparse.Namespace, root: Path, message: str, code: int) -> int:
    """A clean that did not start: the reason on stderr, and with --json also one document on stdout."""
    print(message, file=sys.stderr)
    if opts.json:
        print(json.dumps({"ok": False, "workdir": str(root), "error": message, "exit_code": code},
                         ensure_ascii=False))
    return code


# --- report ------------------------------------------------------------------------------------------------

def _workdir_of(target: str) -> Path | None:
    """A workdir as given, or the workdir of a manifest file."""
    path = Path(target)
    if path.is_dir():
        return path.absolute()
    if not path.is_file():
        print(f"{target}: no such workdir or manifest", file=sys.stderr)
        return None
    from .manifest import ManifestInvalid, load

    try:
        return load(path).workdir
    except ManifestInvalid as exc:
        print(f"invalid manifest {exc.source}: " + "; ".join(exc.lines()), file=sys.stderr)
        return None


def report(opts: argparse.Namespace) -> int:
    """The last run's trace (`trace.json`) as a table, where the workdir's bytes are, and the HTML report."""
    root = _workdir_of(opts.target)
    if root is None:
        return EXIT_INVALID
    trace_file, events_file = root / "trace.json", root / "events.jsonl"
    if not trace_file.is_file() and not events_file.is_file():
        print(f"no run recorded in {root} (no trace.json, no events.jsonl)", file=sys.stderr)
        return EXIT_INVALID
    html = _write_html(opts, root)
    if html is False:
        return EXIT_INVALID
    doc: dict[str, Any] = json.loads(trace_file.read_text("utf-8")) if trace_file.is_file() else {}
    disk = _disk_use(root)
    if opts.json:
        print(json.dumps({**doc, "disk_bytes": disk, "html": html and str(html)}, ensure_ascii=False))
        return 0
    if doc:
        rows = [[sid, s["status"], str(len(s.get("attempts", []))), f"{s.get('wall_s', 0):.2f}",
                 str((s.get("error") or {}).get("message") or s.get("reason", ""))[:160]]
                for sid, s in doc.get("steps", {}).items()]
        _table(f"run {doc.get('run_id')}: {doc.get('status')} (exit {doc.get('exit_code')}, {doc.get('wall_s')} s)",
               ["step", "status", "attempts", "wall s", "why"], rows)
    else:
        print(f"no trace.json in {root}: the runner did not finish its last run (see events.jsonl)")
    print("disk: " + ", ".join(f"{name} {format_bytes(n)}" for name, n in disk.items())
          + f"  (storybridge clean {root} --dry-run shows what can go)")
    if html:
        print(f"report: {html}")
    return 0


def _write_html(opts: argparse.Namespace, root: Path) -> Path | None | bool:
    """The HTML report's path; None with --no-html; False when it could not be written (said on stderr)."""
    if opts.no_html:
        return None
    from .report_html import UnknownRun, write_report

    out = Path(opts.html).absolute() if opts.html else root / "report.html"
    try:
        write_report(root, out, opts.run)
    except UnknownRun as exc:
        print(str(exc), file=sys.stderr)
        return False
    except (OSError, safefs.UnsafePath) as exc:
        print(f"cannot write the HTML report {out}: {exc}", file=sys.stderr)
        return False
    return out


def _disk_use(root: Path) -> dict[str, int]:
    from .retention import tree_bytes
    from .workdir import Workdir

    wd = Workdir(root)
    parts = {"outputs": wd.steps, "attempt logs": wd.attempts, "events": wd.events, "state": wd.state_db,
             "result files": wd.results}
    return {name: tree_bytes(path) if path.exists() and not path.is_symlink() else 0 for name, path in parts.items()}


# --- workers, call -----------------------------------------------------------------------------------------

def workers(opts: argparse.Namespace) -> int:
    from workers.runtime.catalog import catalog

    found = catalog()
    if opts.json:
        print(json.dumps([w.as_dict() for w in found], ensure_ascii=False))
        return 0
    rows = [[w.name, w.version, ", ".join(w.devices), "yes (--serve)" if w.warm else "no", w.extra or "-",
             "yes" if not w.missing else f"no: missing {', '.join(w.missing)} ({w.install_hint})"] for w in found]
    _table("workers", ["name", "version", "devices", "warm", "extra", "installed"], rows)
    return 0


def call(opts: argparse.Namespace) -> int:
    """`storybridge call WORKER ARGS...`: exactly `python -m workers.WORKER ARGS...`, in this process."""
    from workers.runtime.catalog import UnknownWorker, worker_class
    from workers.runtime.cli import main

    try:
        worker = worker_class(opts.worker)()
    except UnknownWorker as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_INVALID
    return main(worker, opts.worker_args)
