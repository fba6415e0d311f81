"""Cache keys: sha256 over the worker identity, the resolved args and the content of input files.

key = sha256(canonical JSON of {worker, args, inputs, upstream}) where
  worker   = sha256 of {name, version, contract_version, argv} (from `--describe`, once per worker per run)
  args     = sha256 of the resolved args (references replaced, `output_dir` left out)
  inputs   = {absolute path: content sha256} for every string in the args naming an existing regular file
             (relative strings are tried against the manifest's directory, the workers' cwd); other special
             files count by name only, and a file that cannot be read fails its step (InputUnreadable)
  upstream = {dependency id: its committed cache key}
The components are stored with each committed record so `--explain` can say *what* changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from . import safefs
from .refs import walk_strings
from .state import StateDB
from .worker_client import WorkerIdentity

MAX_PATH_CHARS = 4096


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sha(value: Any) -> str:
    return hashlib.sha256(canonical(value)).hexdigest()


class InputUnreadable(Exception):
    """An input file that exists but cannot be read (the step fails with `input_unreadable`, not the run)."""


def input_files(args: dict[str, Any], base_dir: Path) -> dict[str, Path]:
    """JSON path -> resolved file, for every string arg value that names an existing regular file.

    Anything else (a directory, a FIFO, a device) counts by name only: it is part of the args, never read.
    """
    found: dict[str, Path] = {}
    for where, text in walk_strings(args, "$"):
        if not text or len(text) > MAX_PATH_CHARS or "\n" in text or "\x00" in text:
            continue
        candidate = Path(os.path.expanduser(text))
        if not candidate.is_absolute():
            candidate = base_dir / candidate
        try:
            if candidate.is_file():
                found[where] = candidate.resolve()
        except (OSError, ValueError):
            continue
    return found


def file_sha256(path: Path, state: StateDB | None) -> str | None:
    """Content hash, memoised in the state DB by (path, size, mtime, inode, ctime) so unchanged inputs are not
    re-read.

    None when `path` is no longer a regular file (it changed type since it was found). Raises InputUnreadable.
    """
    try:
        opened = safefs.open_regular_for_reading(path)
        if opened is None:
            return None
        fd, st = opened
        try:
            cached = state.cached_hash(str(path), st) if state is not None else None
            if cached:
                return cached
            digest = safefs.sha256_fd(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise InputUnreadable(f"input file {path} cannot be read: {exc.strerror or exc}") from None
    if state is not None:
        state.store_hash(str(path), st, digest)
    return digest


def components(identity: WorkerIdentity, args: dict[str, Any], base_dir: Path, upstream: dict[str, str],
               state: StateDB | None, ignore: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The four key components (see the module doc). Raises InputUnreadable."""
    plain = {k: v for k, v in args.items() if k != "output_dir"}
    files = input_files({k: v for k, v in plain.items() if k not in ignore}, base_dir)
    hashes = {str(p): file_sha256(p, state) for p in sorted(set(files.values()))}
    return {
        "worker": sha(identity.as_dict()),
        "args": sha(plain),
        "inputs": {p: digest for p, digest in hashes.items() if digest is not None},
        "upstream": dict(sorted(upstream.items())),
    }


def key_of(parts: dict[str, Any]) -> str:
    return sha(parts)


def diff(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """Why a key changed, in words (empty when the components are equal)."""
    if not old:
        return ["no recorded key components"]
    reasons = []
    if old.get("worker") != new["worker"]:
        reasons.append("worker changed (name, version, contract version or argv)")
    if old.get("args") != new["args"]:
        reasons.append("args changed")
    old_in, new_in = old.get("inputs", {}), new["inputs"]
    changed = sorted(p for p in set(old_in) | set(new_in) if old_in.get(p) != new_in.get(p))
    if changed:
        reasons.append("input changed: " + ", ".join(changed[:3]) + (" …" if len(changed) > 3 else ""))
    old_up, new_up = old.get("upstream", {}), new["upstream"]
    ups = sorted(s for s in set(old_up) | set(new_up) if old_up.get(s) != new_up.get(s))
    if ups:
        reasons.append("upstream changed: " + ", ".join(ups))
    return reasons
