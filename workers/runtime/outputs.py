"""Output files: staged, hashed, and committed into output_dir only when the job succeeds."""

from __future__ import annotations

import errno
import hashlib
import mimetypes
import os
import shutil
from pathlib import Path

from workers.contract import OutputFile

from .errors import InternalError, InvalidInput, ResourceExhausted
from .paths import contained
from .staging import StageDir, remove_stale_stages

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
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_stages(output_dir)
            self._stage = StageDir(output_dir)  # locked for this job's lifetime: no cleaner removes it
        except OSError as exc:
            raise _output_dir_error(output_dir, exc) from None
        self.dir = self._stage.path
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
        if not self.dir.is_dir():
            raise InternalError(f"the staging dir {self.dir} disappeared before the outputs were committed "
                                "(removed by something else); nothing was written")
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
        self._stage.release()
        return outputs

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self._stage.release()
        if self._created_output_dir:
            try:
                self.output_dir.rmdir()  # only if empty
            except OSError:
                pass
