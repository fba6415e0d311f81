"""Path rules: inputs and output_dir under the allowed roots; outputs never escape output_dir."""

from __future__ import annotations

import functools
import inspect
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


def _unusable(field: str, path: object, exc: Exception) -> InvalidInput:
    reason = getattr(exc, "strerror", None) or str(exc)
    return _bad(field, f"cannot be used: {reason}", "bad_path", path)


def _path_checked(check):
    """A path check whose OS errors (name too long, permission denied, NUL byte, symlink loop) are field errors."""
    signature = inspect.signature(check)

    @functools.wraps(check)
    def checked(*args, **kwargs):
        try:
            return check(*args, **kwargs)
        except InvalidInput:
            raise
        except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: a symlink loop in Path.resolve
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            raise _unusable(bound.arguments["field"], bound.arguments["path"], exc) from None

    return checked


@_path_checked
def check_allowed(path: str | os.PathLike[str], field: str) -> Path:
    """Resolve `path` (following symlinks) and refuse it when it lies outside the allowed roots."""
    resolved = Path(path).expanduser().resolve()
    roots = allowed_roots()
    if roots and not any(_is_under(resolved, r) for r in roots):
        raise _bad(field, f"resolves to {str(resolved)!r}, outside the allowed roots "
                   f"({ALLOWED_ROOTS_ENV}={os.environ[ALLOWED_ROOTS_ENV]!r})", "path_not_allowed", path)
    return resolved


def _bad(field: str, message: str, type_: str, value: object) -> InvalidInput:
    return InvalidInput.for_field(field, f"{field} {str(value)!r} {message}", type_=type_, detail=message)


@_path_checked
def check_output_dir(path: str | os.PathLike[str], field: str = "output_dir") -> Path:
    """An allowed directory the worker can write into, or create; checked before any model loads."""
    resolved = check_allowed(path, field)
    if resolved.exists():
        if not resolved.is_dir():
            raise _bad(field, "exists and is not a directory", "output_dir", path)
        if not os.access(resolved, os.W_OK | os.X_OK):
            raise _bad(field, "is not writable", "output_dir", path)
        return resolved
    ancestor = resolved.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise _bad(field, f"cannot be created: {str(ancestor)!r} is a file, not a directory", "output_dir", path)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise _bad(field, f"cannot be created: no write permission in {str(ancestor)!r}", "output_dir", path)
    return resolved


def contained(base: Path, name: str) -> Path:
    """`base / name`, refusing anything that would resolve outside `base`."""
    candidate = (base / name).resolve()
    if not _is_under(candidate, base.resolve()) or candidate == base.resolve():
        raise InvalidInput(f"output name {name!r} escapes the output directory", type_="output_name")  # path: $
    return candidate


@_path_checked
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
    elif not os.access(resolved, os.R_OK):
        err = "is not readable (permission denied)"
    if err:
        raise _bad(field, err, "bad_file", path)
    return resolved
