"""`python -m bridge validate`, once the manifest loaded: whether its steps' resources can ever be met, by this
machine (default) or, with `--executor ray`, by some alive node of the Ray cluster. Exit 0: valid; 2: a step
that can never start (as for an invalid manifest); 4 (setup): the Ray cluster cannot be reached."""

from __future__ import annotations

import json
import sys

from .manifest import LoadedManifest
from .resources import Gpu

EXIT_INVALID = 2
EXIT_SETUP = 4


def validate(loaded: LoadedManifest, as_json: bool, gpus: list[Gpu] | None, ray_options=None) -> int:
    """`ray_options` (a ray_executor.RayOptions): check against that cluster instead of this machine."""
    if ray_options is not None:
        from .ray_executor import RayUnavailable
        from .ray_validate import cluster_problems

        where = "on the Ray cluster"
        try:
            problems = cluster_problems(loaded, ray_options)
        except RayUnavailable as exc:
            _report_setup_error(loaded, as_json, str(exc))
            return EXIT_SETUP
    else:
        from .machine import resource_problems
        from .worker_client import worker_env

        where = "on this machine"
        problems = resource_problems(loaded, gpus, worker_env())  # steps this machine can never start
    if problems:
        _report_problems(loaded, as_json, where, problems)
        return EXIT_INVALID
    if as_json:
        print(json.dumps({"ok": True, "manifest": str(loaded.path), "workdir": str(loaded.workdir),
                          "order": loaded.order}, ensure_ascii=False))
    else:
        print(f"manifest {loaded.path} is valid: {len(loaded.order)} step(s), order {' -> '.join(loaded.order)}")
    return 0


def _report_problems(loaded: LoadedManifest, as_json: bool, where: str, problems: list[str]) -> None:
    if as_json:
        print(json.dumps({"ok": False, "manifest": str(loaded.path),
                          "errors": [{"path": "$", "message": p, "type": "resources"} for p in problems]}))
        return
    print(f"manifest {loaded.path} cannot run {where}:", file=sys.stderr)
    for line in problems:
        print(f"  {line}", file=sys.stderr)


def _report_setup_error(loaded: LoadedManifest, as_json: bool, message: str) -> None:
    if as_json:
        print(json.dumps({"ok": False, "manifest": str(loaded.path),
                          "errors": [{"path": "$", "message": message, "type": "setup"}]}))
    else:
        print(f"[setup error] {message}", file=sys.stderr)
