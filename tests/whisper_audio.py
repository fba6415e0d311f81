"""Helpers for the whisper worker tests and bench: synthetic speech, WER, running the worker.

Speech comes from espeak-ng at test time (no audio files in the repo); the sentences are the
ones the environment probe measured (see shared/reference/tiny-models/sentences.txt).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother Bob.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags, and we will go meet her Wednesday at the train station.",
]
REFERENCE_TEXT = " ".join(SENTENCES)

TOOLS = ("espeak-ng", "sox", "ffmpeg")


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_speech(directory: Path, text: str = REFERENCE_TEXT, name: str = "speech16k.wav") -> Path:
    """espeak-ng speech resampled to 16 kHz mono 16-bit by sox (~27 s for REFERENCE_TEXT)."""
    directory.mkdir(parents=True, exist_ok=True)
    text_file, raw, out = directory / f"{name}.txt", directory / f"{name}.raw.wav", directory / name
    text_file.write_text(text + "\n", encoding="utf-8")
    _run(["espeak-ng", "-v", "en-us", "-s", "150", "-f", str(text_file), "-w", str(raw)])
    _run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)])
    return out


def make_silence(directory: Path, seconds: float = 8.0, name: str = "silence.wav") -> Path:
    out = directory / name
    _run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(out), "trim", "0", str(seconds)])
    return out


def convert(src: Path, dst: Path, video: bool = False) -> Path:
    """Re-encode with ffmpeg: the container/codec follows dst's suffix; `video` adds a black video track."""
    cmd = ["ffmpeg", "-loglevel", "error", "-y"]
    if video:
        cmd += ["-f", "lavfi", "-i", "color=c=black:s=64x112:r=10", "-i", str(src), "-shortest",
                "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"]
    else:
        cmd += ["-i", str(src)]
    # 64 kbit/s: ffmpeg's default for 16 kHz mono mp3 is 24 kbit/s, audibly worse than a real narration file
    _run([*cmd, "-b:a", "64k", str(dst)])
    return dst


def normalize(text: str) -> list[str]:
    text = text.lower().replace("-", " ")
    return re.sub(r"[^a-z0-9' ]+", " ", text).split()


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return jiwer.wer(" ".join(normalize(reference)), " ".join(normalize(hypothesis)) or "<empty>")


def worker_cmd(*extra: str) -> list[str]:
    return [sys.executable, *extra, "-m", "workers.whisper"]


def run_oneshot(args: dict[str, Any], tmp: Path, *, python_flags: tuple[str, ...] = ()) -> tuple[int, dict, str]:
    """Run `python -m workers.whisper --input args.json`; (exit code, the one envelope, stderr)."""
    tmp.mkdir(parents=True, exist_ok=True)
    args_file = tmp / "args.json"
    args_file.write_text(json.dumps(args), encoding="utf-8")
    proc = subprocess.run([*worker_cmd(*python_flags), "--input", str(args_file)], cwd=REPO,
                          capture_output=True, text=True, timeout=240)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, f"expected exactly one JSON document on stdout, got {proc.stdout!r}\n{proc.stderr[-2000:]}"
    return proc.returncode, json.loads(lines[0]), proc.stderr


class ServeClient:
    """A `--serve` worker process: send one request, read one response line."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([*worker_cmd(), "--serve"], cwd=REPO, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.ready = self._read()
        assert self.ready["event"] == "ready", self.ready

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, f"worker exited without answering (code {self.proc.poll()})"
        return json.loads(line)

    def request(self, message: dict | str) -> dict:
        self.proc.stdin.write((message if isinstance(message, str) else json.dumps(message)) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> int:
        try:
            if self.proc.poll() is None:
                answer = self.request({"op": "shutdown", "id": "bye"})
                assert answer["event"] == "shutdown"
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
