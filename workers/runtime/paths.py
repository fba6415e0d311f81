"""Path rules: inputs and output_dir under the allowed roots; outputs never escape output_dir."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InvalidInput

#: os.pathsep-separated list of directories; when set, every path a worker reads or writes must lie under one.
ALLOWED_ROOTS_ENV = "STORYBRIDGE_ALLOWED_ROOTS"


def allowed_roots() -> list[Path]:
    raw = os.environ.get(ALLOWED_ROOTS_ENV, "")
    return [Path(p).resolve() for p in raw.split(os.pathsep) if p.strip()]


def _is_under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_allowed(path: str | os.PathLike[str], field: str) -> Path:
    """Resolve `path` (following symlinks) and refuse it when it lies outside the allowed roots."""
    resolved = Path(path).expanduser().resolve()
    roots = allowed_roots()
    if roots and not any(_is_under(resolved, r) for r in roots):
        raise InvalidInput(
            f"{field} {str(resolved)!r} is outside the allowed roots ({ALLOWED_ROOTS_ENV}={os.environ[ALLOWED_ROOTS_ENV]!r})",
            details={"field_errors": [{"path": f"$.{field}", "message": "outside allowed roots", "type": "path_not_allowed"}]},
        )
    return resolved


def contained(base: Path, name: str) -> Path:
    """`base / name`, refusing anything that would resolve outside `base`."""
    candidate = (base / name).resolve()
    if not _is_under(candidate, base.resolve()) or candidate == base.resolve():
        raise InvalidInput(f"output name {name!r} escapes the output directory")
    return candidate


def input_file(path: str, field: str) -> Path:
    """An existing, non-empty regular file the worker may read."""
    resolved = check_allowed(path, field)
    err = None
    if not resolved.exists():
        err = "does not exist"
    elif resolved.is_dir():
        err = "is a directory, not a file"
    elif not resolved.is_file():
        err = "is not a regular file"
    elif resolved.stat().st_size == 0:
        err = "is empty"
    if err:
        raise InvalidInput(
            f"{field} {path!r} {err}",
            details={"field_errors": [{"path": f"$.{field}", "message": err, "type": "bad_file"}]},
        )
    return resolved
