"""Output files: staged, hashed, and committed into output_dir only when the job succeeds."""

from __future__ import annotations

import hashlib
import mimetypes
import os
import shutil
import uuid
from pathlib import Path

from workers.contract import OutputFile

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


class OutputStage:
    """A hidden staging directory inside output_dir; `commit` moves files into place, `discard` removes all.

    Staging on the same filesystem makes the final move an atomic rename, so a failed or killed job
    never leaves a half-written file under its real name.
    """

    def __init__(self, output_dir: Path):
        self.output_dir = output_dir
        self._created_output_dir = not output_dir.exists()
        output_dir.mkdir(parents=True, exist_ok=True)
        self.dir = output_dir / f".partial-{uuid.uuid4().hex[:12]}"
        self.dir.mkdir()
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
