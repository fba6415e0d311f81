"""Data mode `ship` of the Ray executor (no shared storage), without Ray itself: which input files an attempt's
args name (they travel to the node), the node's output files cut into bounded chunks, and the head's side that
writes the chunks into the staging directory and checks every output's size and sha256 before the commit.

Everything here is plain Python on plain values, so it is tested without a cluster.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from . import safefs
from .refs import map_strings

#: One object in Ray's object store per chunk; with the generator's backpressure this bounds the memory an
#: attempt's outputs take in flight (chunk size x backpressure objects).
CHUNK_BYTES = 4 * 1024 * 1024
#: Input files larger than this are not shipped (one object each); put them on every node instead.
MAX_INPUT_BYTES = 512 * 1024 * 1024


class ShipError(Exception):
    """A shipped file cannot be accepted (a path that leaves the staging dir, a size or digest mismatch)."""


def input_files(args: dict[str, Any], cwd: Path) -> dict[str, Path]:
    """Strings in `args` (output_dir aside) that name an existing regular file, relative ones against `cwd`:
    the files a node without the head's file system must receive. {the string as written: the file}"""
    found: dict[str, Path] = {}

    def look(text: str) -> str:
        if text and text not in found and len(text) < 4096 and "\0" not in text:
            path = Path(text).expanduser()
            path = path if path.is_absolute() else cwd / path
            try:
                if path.is_file():
                    found[text] = path.resolve()
            except OSError:  # a name too long, a permission problem: not an input file
                pass
        return text

    map_strings({k: v for k, v in args.items() if k != "output_dir"}, look)
    return found


def read_input(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_INPUT_BYTES:
        raise ShipError(f"input file {path} has {size} bytes, more than the {MAX_INPUT_BYTES >> 20} MiB shipped "
                        "per file; put it on every node (HF_HOME, a shared path) or use --ray-data shared")
    return path.read_bytes()


def place_inputs(root: Path, blobs: dict[str, bytes]) -> dict[str, str]:
    """Node side: write each shipped input under `root` (one directory each, the original file name kept, as
    some workers look at extensions). {the string as written in args: its path on this node}"""
    placed = {}
    for n, (text, data) in enumerate(sorted(blobs.items())):
        directory = root / str(n)
        directory.mkdir(parents=True)
        target = directory / (Path(text).name or "input")
        target.write_bytes(data)
        placed[text] = str(target)
    return placed


def rewrite_args(args: dict[str, Any], placed: dict[str, str]) -> dict[str, Any]:
    """The args with each shipped input's string replaced by its path on the node (exact strings only)."""
    return map_strings(args, lambda text: placed.get(text, text))


def output_files(root: Path) -> list[tuple[str, int]]:
    """Node side: the regular files under `root`, as (POSIX relative path, size); links are never followed."""
    files = []
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(directory) / name
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                files.append((path.relative_to(root).as_posix(), st.st_size))
    return files


def chunks(root: Path, files: list[tuple[str, int]], chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[str, bytes]]:
    """Node side: (relative path, bytes) pieces of each file, at most `chunk_bytes` each; an empty file sends
    one empty piece, so it arrives too."""
    for rel, _size in files:
        with open(root / rel, "rb") as f:
            first = True
            while (data := f.read(chunk_bytes)) or first:
                first = False
                yield rel, data


class StagingSink:
    """Head side: chunks into files under the staging dir, hashed as they are written."""

    def __init__(self, staging: Path):
        self.staging = staging
        self._open: tuple[str, Any, Any] | None = None  # (rel, file, hash) of the file being received
        self.received: dict[str, tuple[int, str]] = {}  # rel -> (bytes, sha256)

    def write(self, rel: str, data: bytes) -> None:
        if self._open is None or self._open[0] != rel:
            self._close_current()
            target = self._target(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = safefs.open_nofollow(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            self._open = (rel, os.fdopen(fd, "wb"), hashlib.sha256())
        _, f, digest = self._open
        f.write(data)
        digest.update(data)

    def close(self) -> dict[str, tuple[int, str]]:
        self._close_current()
        return self.received

    def _close_current(self) -> None:
        if self._open is not None:
            rel, f, digest = self._open
            self.received[rel] = (f.tell(), digest.hexdigest())
            f.close()
            self._open = None

    def _target(self, rel: str) -> Path:
        parts = PurePosixPath(rel).parts
        if not parts or PurePosixPath(rel).is_absolute() or any(p in ("", ".", "..") for p in parts):
            raise ShipError(f"a shipped file named {rel!r} would land outside the staging directory")
        if rel in self.received:
            raise ShipError(f"{rel!r} was shipped twice")
        return self.staging.joinpath(*parts)


def check_received(outputs: list[dict[str, Any]], staging: Path, received: dict[str, tuple[int, str]]) -> list[str]:
    """Every output the envelope lists (paths already on the head) arrived with its reported size and sha256."""
    problems = []
    root = staging.resolve()
    for out in outputs:
        path = Path(str(out.get("path")))
        try:
            rel = path.resolve().relative_to(root).as_posix()
        except ValueError:
            problems.append(f"{path} lies outside the step's output_dir {root}")
            continue
        got = received.get(rel)
        if got is None:
            problems.append(f"{path} did not arrive from the node")
        elif got[0] != out.get("bytes"):
            problems.append(f"{path} arrived with {got[0]} bytes, the worker reported {out.get('bytes')}")
        elif got[1] != out.get("sha256"):
            problems.append(f"{path} arrived with sha256 {got[1][:12]}…, the worker reported "
                            f"{str(out.get('sha256'))[:12]}…")
    return problems
