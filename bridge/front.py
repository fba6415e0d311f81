"""`storybridge`: the front door for people.

    storybridge run|validate|schema ...   the reference runner's commands (bridge.cli, unchanged)
    storybridge report WORKDIR|MANIFEST   the last run's steps, the workdir's disk use, an HTML report
    storybridge clean WORKDIR             remove what a resume never needs (bridge.retention)
    storybridge workers                   the installed workers, their devices and extras
    storybridge call WORKER -i K=V ...    run one worker job, as `python -m workers.WORKER`

`python -m bridge` is this same front door. Tab completion: argcomplete (`eval "$(register-python-argcomplete
storybridge)"`), when installed.
"""

from __future__ import annotations

import argparse
from typing import Any

from . import cli, commands


def _worker_names(**_: Any) -> list[str]:
    """Completion of `call WORKER`: read from the registry only when completing (the runner imports no workers)."""
    from workers.contract.registry import WORKER_CONTRACT_MODULES

    return sorted(WORKER_CONTRACT_MODULES)


def _add_clean(sub) -> None:
    p = sub.add_parser("clean", help="remove what a resume never needs (attempt logs, leftovers, superseded outputs)",
                       description="Removes old attempt directories and the events of older runs, staging and "
                       "trash leftovers, and outputs or result files no committed record names. Current committed "
                       "outputs stay (a resume right after is all cache hits) unless --all. Refused (exit 3) "
                       "while a run holds the workdir lock; never follows a symbolic link.")
    p.add_argument("workdir", help="the run directory (a manifest's workdir)")
    p.add_argument("--keep-last", type=int, default=1, metavar="N",
                   help="keep the attempt logs and events of the last N runs (default 1; 0 keeps none)")
    p.add_argument("--older-than", metavar="AGE", help="only remove what is older than AGE (90s, 30m, 12h, 7d, 2w)")
    p.add_argument("--dry-run", action="store_true", help="list what would go and the bytes freed; delete nothing")
    p.add_argument("--all", action="store_true", help="also remove the committed outputs (the next run re-runs)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON document")
    p.set_defaults(func=commands.clean)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="the last run's steps and the workdir's disk use; writes a self-contained "
                       "HTML report (timeline, contact sheet, final video, per-step table)")
    p.add_argument("target", metavar="WORKDIR|MANIFEST")
    p.add_argument("--json", action="store_true", help="print trace.json and the disk use as one JSON document")
    p.add_argument("--html", metavar="PATH", help="write the HTML report here (default: WORKDIR/report.html)")
    p.add_argument("--no-html", action="store_true", help="do not write the HTML report")
    p.add_argument("--run", metavar="RUN_ID", help="the run whose timeline the HTML report shows (default: the last)")
    p.set_defaults(func=commands.report)


def _add_workers(sub) -> None:
    p = sub.add_parser("workers", help="installed workers: version, devices, warm mode, extra installed")
    p.add_argument("--json", action="store_true", help="print the list as one JSON document")
    p.set_defaults(func=commands.workers)


def _add_call(sub) -> None:
    p = sub.add_parser("call", help="run one worker job: storybridge call WORKER -i KEY=VALUE ... -o DIR",
                       description="Same as `python -m workers.WORKER ARGS...`: one JSON envelope on stdout.")
    p.add_argument("worker", metavar="WORKER").completer = _worker_names
    p.add_argument("worker_args", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="the worker's own arguments (-i KEY=VALUE, -o DIR, --input, --pretty, --help, ...)")
    p.set_defaults(func=commands.call)


#: The front door's own commands; a command of the same name in bridge.cli takes precedence.
FRONT_COMMANDS = {"report": _add_report, "clean": _add_clean, "workers": _add_workers, "call": _add_call}
#: How `storybridge --help` lists the commands (any other command follows).
ORDER = ("run", "validate", "report", "clean", "schema", "workers", "call")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storybridge", description=__doc__.split("\n\n")[0].strip() + " See "
                                     "`storybridge COMMAND --help`.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands_by_name = {**FRONT_COMMANDS, **cli.RUNNER_COMMANDS}  # the runner's options are defined once, there
    for name in [*ORDER, *(n for n in commands_by_name if n not in ORDER)]:
        commands_by_name[name](sub)
    return parser


def _enable_completion(parser: argparse.ArgumentParser) -> None:
    try:
        import argcomplete
    except ImportError:  # the `completion` extra is optional: no completion, everything else works
        return
    argcomplete.autocomplete(parser)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _enable_completion(parser)
    opts = parser.parse_args(argv)
    return opts.func(opts)
