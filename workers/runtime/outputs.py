"""Output files: staged, hashed, and committed into output_dir only when the job succeeds."""

from __future__ import annotations

import errno
import hashlib
import mimetypes
import os
import re
import shutil
import stat
import time
import uuid
from pathlib import Path

import psutil

from workers.contract import OutputFile

from .errors import InvalidInput, ResourceExhausted
from .events import emit
from .paths import contained

_MEDIA_TYPES = {
    ".srt": "application/x-subrip",
    ".vtt": "text/vtt",
    ".json": "application/json",
    ".txt": "text/plain",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".webp": "image/webp",
    ".mp4": "video/mp4",
    ".wav": "audio/wav",
}


def media_type_for(path: Path) -> str:
    return _MEDIA_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


STAGE_PREFIX = ".partial-"
#: `.partial-<pid>-<process start, ms>-<random>`: who owns a staging dir, so a later run can tell a live one
#: (another worker writing into the same output_dir) from one a SIGKILL left behind.
_OWNED_STAGE = re.compile(r"^\.partial-(\d+)-(\d+)-[0-9a-f]+$")
#: Staging dirs from before owners were recorded are removed once they are this old.
UNOWNED_STAGE_MAX_AGE_S = 3600.0


def _process_start_ms(pid: int) -> int | None:
    try:
        return round(psutil.Process(pid).create_time() * 1000)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return -1  # alive, start time unknown


def _stage_is_stale(entry: os.DirEntry) -> bool:
    match = _OWNED_STAGE.match(entry.name)
    if match is None:
        return time.time() - entry.stat(follow_symlinks=False).st_mtime > UNOWNED_STAGE_MAX_AGE_S
    pid, started_ms = int(match[1]), int(match[2])
    if pid == os.getpid():
        return False
    current = _process_start_ms(pid)
    return current is None or (current != -1 and abs(current - started_ms) > 1000)  # gone, or pid reused


def remove_stale_stages(output_dir: Path) -> int:
    """Delete `.partial-*` directories whose worker is gone (killed before it could clean up).

    Never follows a symlink: only real directories are considered, and rmtree unlinks links inside."""
    removed = 0
    try:
        entries = list(os.scandir(output_dir))
    except OSError:
        return 0
    for entry in entries:
        try:
            if not entry.name.startswith(STAGE_PREFIX) or not stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode):
                continue
            if _stage_is_stale(entry):
                shutil.rmtree(entry.path)
                removed += 1
        except OSError as exc:  # racing another cleaner, or not ours to delete: leave it
            emit("log", level="warning", message=f"could not remove stale staging dir {entry.path}: {exc}")
    if removed:
        emit("log", level="info", message=f"removed {removed} stale staging dir(s) in {output_dir}")
    return removed


def _output_dir_error(output_dir: Path, exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(f"output_dir {str(output_dir)!r}: disk full ({exc.strerror})",
                                 details={"path": str(output_dir)})
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        reason = "a path component is a file, not a directory"
    return InvalidInput.for_field("output_dir", f"output_dir {str(output_dir)!r} cannot be used: {reason}",
                                  type_="output_dir", detail=f"cannot be used: {reason}")


class OutputStage:
    """A hidden staging directory inside output_dir; `commit` moves files into place, `discard` removes all.

    Staging on the same filesystem makes the final move an atomic rename, so a failed or killed job
    never leaves a half-written file under its real name.
    """

    def __init__(self, output_dir: Path):
        self.output_dir = output_dir
        self._created_output_dir = not output_dir.exists()
        started_ms = _process_start_ms(os.getpid())
        self.dir = output_dir / f"{STAGE_PREFIX}{os.getpid()}-{max(started_ms or 0, 0)}-{uuid.uuid4().hex[:8]}"
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_stages(output_dir)
            self.dir.mkdir()
        except OSError as exc:
            raise _output_dir_error(output_dir, exc) from None
        self._files: dict[str, str] = {}  # name -> media type

    def path(self, name: str, media_type: str | None = None) -> Path:
        """Where to write output `name` now; it appears as output_dir/name on commit."""
        target = contained(self.dir, name)
        contained(self.output_dir, name)  # the committed name must stay inside output_dir too
        target.parent.mkdir(parents=True, exist_ok=True)
        self._files[name] = media_type or media_type_for(target)
        return target

    def final_path(self, name: str) -> Path:
        return contained(self.output_dir, name)

    def commit(self) -> list[OutputFile]:
        outputs = []
        for name, media_type in self._files.items():
            staged = self.dir / name
            if not staged.is_file():
                continue  # declared but never written: not an output
            final = self.final_path(name)
            final.parent.mkdir(parents=True, exist_ok=True)
            digest, size = sha256_file(staged), staged.stat().st_size
            os.replace(staged, final)
            outputs.append(OutputFile(path=str(final), sha256=digest, bytes=size, media_type=media_type))
        shutil.rmtree(self.dir, ignore_errors=True)
        return outputs

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        if self._created_output_dir:
            try:
                self.output_dir.rmdir()  # only if empty
            except OSError:
                pass
