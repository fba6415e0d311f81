"""`python -m bridge <command>`."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path


def _schema(opts: argparse.Namespace) -> int:
    from . import schema_cmd

    schema_dir = Path(opts.dir) if opts.dir else schema_cmd.SCHEMA_DIR
    if opts.write:
        names = schema_cmd.write(schema_dir)
        print(f"wrote {len(names)} schemas to {schema_dir}: {', '.join(names)}")
        return 0
    stale = schema_cmd.check(schema_dir)
    if stale:
        print(f"schemas out of date in {schema_dir}: {', '.join(stale)}\n"
              "run `python -m bridge schema --write` and commit the result", file=sys.stderr)
        return 1
    print(f"schemas in {schema_dir} match the contract models")
    return 0


def _load_manifest(path: str, as_json: bool, overrides: list[tuple[str, str]]):
    """(LoadedManifest, None) or (None, exit code) after reporting every problem."""
    from .manifest import ManifestInvalid, load

    try:
        return load(path, overrides=overrides), None
    except ManifestInvalid as exc:
        if as_json:
            print(json.dumps({"ok": False, "manifest": exc.source, "errors": [p.as_dict() for p in exc.problems]},
                             ensure_ascii=False))
        else:
            print(f"invalid manifest {exc.source}: {len(exc.problems)} problem(s)", file=sys.stderr)
            for line in exc.lines():
                print(f"  {line}", file=sys.stderr)
        return None, 2


def _gpus(spec: str | None):
    from .gpus import parse_gpus

    return None if spec is None else parse_gpus(spec)


def _validate(opts: argparse.Namespace) -> int:
    loaded, code = _load_manifest(opts.manifest, opts.json, param_overrides(opts))
    if loaded is None:
        return code
    from .validate_cmd import validate

    return validate(loaded, opts.json, _gpus(opts.gpus), _ray_options(opts))


def _run(opts: argparse.Namespace) -> int:
    import signal
    import threading

    from .runner import Runner, RunOptions

    events_stdout = opts.events == "-"
    loaded, code = _load_manifest(opts.manifest, events_stdout, param_overrides(opts))
    if loaded is None:
        return code
    if opts.workdir:
        loaded.workdir = Path(opts.workdir).resolve()
    cancel = threading.Event()
    options = RunOptions(force=set(opts.force), only=set(opts.only), until=set(opts.until), dry_run=opts.dry_run,
                         explain=opts.explain, events_stdout=events_stdout, jobs=opts.jobs or os.cpu_count() or 1,
                         gpus=_gpus(opts.gpus), warm=not opts.no_warm, warm_idle_s=opts.warm_idle_s,
                         quiet=opts.quiet, executor=opts.executor, ray=_ray_options(opts))
    runner = Runner(loaded, options, cancel=cancel, console=sys.stderr if events_stdout else sys.stdout,
                    events_mirror=sys.stdout if events_stdout else None)

    def stop(signum, _frame):  # Ctrl-C / SIGTERM: stop the worker tree, record, exit 130
        cancel.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, stop)
    try:
        return runner.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ray_options(opts: argparse.Namespace):
    if opts.executor != "ray":
        return None
    from .ray_executor import RayOptions  # imports no ray itself: that happens when the run connects

    # `run` has these two too; `validate` places nothing and keeps the defaults
    run_only = {"data": opts.ray_data, "placement_timeout_s": opts.placement_timeout_s} if "ray_data" in vars(opts) else {}
    return RayOptions(address=opts.ray_address, gpu_gb=opts.ray_gpu_gb, connect_timeout_s=opts.ray_connect_timeout_s,
                      **run_only)


GPUS_HELP = ("GPUs to hand out: `0,1`, `0:24,1:24` (index:VRAM budget in GB) or `none` "
             "(default: detected through NVML or nvidia-smi)")


def _gpu_spec(text: str) -> str:
    from .gpus import GpuSpecInvalid, parse_gpus

    try:
        parse_gpus(text)
    except GpuSpecInvalid as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _param(text: str) -> tuple[str, str]:
    from .params import split_assignment

    try:
        return split_assignment(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


PARAM_HELP = ("override the manifest's param NAME (repeatable); VALUE is read as the default's type: a string as "
              "it is, a number, boolean, array or object as JSON")


def _params_file(text: str) -> list[tuple[str, str]]:
    """A JSON object of param overrides, as NAME=VALUE pairs (strings as they are, anything else as JSON)."""
    try:
        doc = json.loads(Path(text).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read params file {text!r}: {exc}") from None
    if not isinstance(doc, dict):
        raise argparse.ArgumentTypeError(f"params file {text!r} must hold a JSON object of NAME: VALUE")
    return [(name, value if isinstance(value, str) else json.dumps(value)) for name, value in doc.items()]


def _add_param_option(parser) -> None:
    parser.add_argument("--params", action="append", default=[], type=_params_file, metavar="FILE",
                        help="a JSON object of param overrides (repeatable; applied before --param)")
    parser.add_argument("--param", action="append", default=[], type=_param, metavar="NAME=VALUE", help=PARAM_HELP)


def param_overrides(opts: argparse.Namespace) -> list[tuple[str, str]]:
    """--params files in order, then --param: the later override of a name replaces the earlier one."""
    merged = dict(pair for pairs in opts.params for pair in pairs)
    merged.update(opts.param)
    return list(merged.items())


def _seconds(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value


def _positive_gb(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of GB (more than 0)")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _add_schema(sub) -> None:
    schema = sub.add_parser("schema", help="check or regenerate the committed JSON schemas")
    group = schema.add_mutually_exclusive_group(required=True)
    group.add_argument("--check", action="store_true", help="exit 1 when schemas/ differs from the models")
    group.add_argument("--write", action="store_true", help="regenerate schemas/")
    schema.add_argument("--dir", help="schema directory (default: the repository's schemas/)")
    schema.set_defaults(func=_schema)


def _add_validate(sub) -> None:
    validate = sub.add_parser("validate", help="check a manifest; every problem is listed with its JSON path (exit 2)")
    validate.add_argument("manifest")
    validate.add_argument("--json", action="store_true", help="print the result as one JSON document")
    validate.add_argument("--gpus", metavar="SPEC", type=_gpu_spec, help=GPUS_HELP)
    _add_param_option(validate)
    _add_cluster_flags(validate, "whose resources to check against: this machine (default) or a Ray cluster, "
                       "each step against every alive node (exit 2: a step no node can run; 4: unreachable)")
    validate.set_defaults(func=_validate)


def _add_run(sub) -> None:
    run = sub.add_parser("run", help="run a manifest (resumes by default: committed steps that verify are skipped)",
                         description="Exit codes: 0 ok, 1 a step failed, 2 invalid manifest or selection, "
                         "3 workdir locked by another runner, 4 setup error (schemas missing), 130 interrupted.")
    run.add_argument("manifest")
    run.add_argument("--explain", action="store_true", help="print run/skip and why for every step")
    run.add_argument("--dry-run", action="store_true", help="print the plan; run nothing (workers get --describe only)")
    run.add_argument("--force", action="append", default=[], metavar="ID", help="re-run this step (repeatable)")
    pick = run.add_mutually_exclusive_group()
    pick.add_argument("--only", action="append", default=[], metavar="ID",
                      help="run only this step, with committed upstream results (repeatable)")
    pick.add_argument("--until", action="append", default=[], metavar="ID",
                      help="run this step and its ancestors only (repeatable)")
    run.add_argument("--events", metavar="-", choices=["-"],
                     help="'-': also write the JSON-lines events to stdout (the human output goes to stderr)")
    run.add_argument("--workdir", help="override the manifest's workdir")
    _add_param_option(run)
    run.add_argument("--jobs", "-j", type=_positive_int, metavar="N",
                     help="run up to N steps (or items) at once (default: the CPU count)")
    run.add_argument("--gpus", metavar="SPEC", type=_gpu_spec, help=GPUS_HELP)
    run.add_argument("--no-warm", action="store_true",
                     help="one worker process per attempt, even for workers that can serve warm")
    run.add_argument("--warm-idle-s", type=_seconds, default=60.0, metavar="S",
                     help="shut down a warm worker idle for S seconds (default 60)")
    run.add_argument("--quiet", "-q", action="store_true", help="print only failures and the final line")
    _add_ray_flags(run)
    run.set_defaults(func=_run)


def _add_cluster_flags(parser, executor_help: str) -> None:
    parser.add_argument("--executor", choices=["local", "ray"], default="local", help=executor_help)
    parser.add_argument("--ray-address", metavar="ADDR",
                        help="the Ray cluster: `auto` (the one `ray start` made here) or the head's HOST:PORT (default: "
                        "a Ray instance started on this machine); Ray Client (ray://) is refused: it cannot stream")
    parser.add_argument("--ray-connect-timeout-s", type=_seconds, default=60.0, metavar="S",
                        help="give up (exit 4) when the Ray cluster does not answer within S seconds (default 60)")
    parser.add_argument("--ray-gpu-gb", type=_positive_gb, metavar="GB",
                        help="the memory of one GPU of the Ray fleet: a one-GPU step with `vram_gb` V asks Ray for "
                        "V/GB of a GPU (rounded up to 0.01), so steps that fit together share a GPU")


def _add_ray_flags(run) -> None:
    _add_cluster_flags(run, "where attempts run: this machine (default) or a Ray cluster (docs/scale-out.md)")
    run.add_argument("--ray-data", choices=["ship", "shared"], default="ship",
                     help="`ship` (default): inputs and outputs travel through Ray's object store; `shared`: every "
                     "node mounts the workdir at the same path")
    run.add_argument("--placement-timeout-s", type=_seconds, default=60.0, metavar="S",
                     help="an attempt that no Ray node can take fails after S seconds (default 60)")


#: The runner's commands, each added to a subparsers action: ours below, or the `storybridge` front door's.
RUNNER_COMMANDS = {"schema": _add_schema, "validate": _add_validate, "run": _add_run}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bridge", description="storybridge reference runner")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in RUNNER_COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    return opts.func(opts)
