"""Cache keys: sha256 over the worker identity, the resolved args and the content of input files.

key = sha256(canonical JSON of {worker, args, inputs, upstream}) where
  worker   = sha256 of {name, version, contract_version, argv} (from `--describe`, once per worker per run)
  args     = sha256 of the resolved args (references replaced, `output_dir` left out)
  inputs   = {absolute path: content sha256} for every string in the args naming an existing regular file
             (relative strings are tried against the manifest's directory, the workers' cwd)
  upstream = {dependency id: its committed cache key}
The components are stored with each committed record so `--explain` can say *what* changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .refs import walk_strings
from .state import StateDB
from .worker_client import WorkerIdentity, sha256_file

MAX_PATH_CHARS = 4096


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sha(value: Any) -> str:
    return hashlib.sha256(canonical(value)).hexdigest()


def input_files(args: dict[str, Any], base_dir: Path) -> dict[str, Path]:
    """JSON path -> resolved file, for every string arg value that is an existing regular file."""
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


def file_sha256(path: Path, state: StateDB | None) -> str:
    """Content hash, memoised in the state DB by (path, size, mtime_ns) so unchanged inputs are not re-read."""
    st = path.stat()
    if state is not None:
        cached = state.cached_hash(str(path), st.st_size, st.st_mtime_ns)
        if cached:
            return cached
    digest = sha256_file(path)
    if state is not None:
        state.store_hash(str(path), st.st_size, st.st_mtime_ns, digest)
    return digest


def components(identity: WorkerIdentity, args: dict[str, Any], base_dir: Path, upstream: dict[str, str],
               state: StateDB | None, ignore: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    plain = {k: v for k, v in args.items() if k != "output_dir"}
    files = input_files({k: v for k, v in plain.items() if k not in ignore}, base_dir)
    return {
        "worker": sha(identity.as_dict()),
        "args": sha(plain),
        "inputs": {str(p): file_sha256(p, state) for p in sorted(set(files.values()))},
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
