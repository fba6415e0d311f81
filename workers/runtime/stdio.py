"""stdout is the protocol: keep the real fd aside, point fd 1 at stderr while models run."""

from __future__ import annotations

import io
import os
import sys
from typing import Any

import orjson

from .signals import signals_deferred


def force_utf8() -> None:
    """UTF-8 on every platform (Windows consoles and pipes default to a legacy code page)."""
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            try:
                stream.reconfigure(encoding="utf-8", errors="backslashreplace" if stream is not sys.stdin else "strict")
            except (ValueError, OSError):
                pass


def quiet_progress_bars() -> None:
    """No tqdm bars from huggingface_hub/transformers ("Loading weights: 43%|...") on stderr: stderr is JSON lines,
    and the worker reports its own progress events. A host may still opt in by setting the variable."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=_OPTIONS)


class ProtocolStream:
    """The process's original stdout. Everything else written to fd 1 lands on stderr."""

    def __init__(self, fd: int):
        self._fd = fd

    @classmethod
    def take_stdout(cls) -> ProtocolStream:
        """Duplicate fd 1 for the protocol, then redirect fd 1 (and sys.stdout) to stderr.

        The fd-level dup2 catches output from C extensions and subprocesses too, not just Python prints.
        """
        try:
            sys.stdout.flush()
        except (AttributeError, ValueError, OSError):
            pass
        protocol_fd = os.dup(1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        return cls(protocol_fd)

    def write_json(self, obj: Any, *, pretty: bool = False) -> None:
        """One JSON document, written whole: on one line, or indented for people (`--pretty`)."""
        self.write_bytes(orjson.dumps(obj, option=_OPTIONS | orjson.OPT_INDENT_2) if pretty else dumps(obj))

    def write_bytes(self, document: bytes) -> None:
        """One rendered document and a newline; SIGTERM/SIGINT wait until the line is out, so it is never cut."""
        with signals_deferred():  # a flag the handler checks: works whichever thread the signal was delivered to
            data = memoryview(document + b"\n")
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
