"""A warm process's stderr, relayed to the request in flight (its stderr.log and event handler; between
requests, to the error tail only), like a one-shot worker's (process.StderrReader).

The relay reads the pipe itself and handles every chunk under one lock, so that `drain` can tell exactly when
all that the worker wrote to stderr before its answer has been relayed: a request's last progress events
reach that request, not the void after it ended.
"""

from __future__ import annotations

import os
import select
import struct
import threading
import time
from pathlib import Path

from . import safefs
from .process import STDERR_LINE_BYTES, StderrReader, WorkerEventHandler

#: How long `drain` waits for the relay to catch up (it is one pipe read away unless the machine is stalled).
_DRAIN_S = 2.0


class RoutedStderr(StderrReader):
    def __init__(self, stream):
        super().__init__(stream, None, None)
        self._lock = threading.Lock()
        self._partial = b""

    def route(self, log_path: Path | None, on_event: WorkerEventHandler | None) -> None:
        with self._lock:
            if log_path is not None:
                self.tail.clear()  # a crash message quotes this request's stderr, not an earlier one's
            self._log_path, self._on_event = log_path, on_event

    def drain(self) -> None:
        """Return once every byte already in the pipe has been relayed (or after _DRAIN_S)."""
        deadline = time.monotonic() + _DRAIN_S
        while _unread_bytes is not None and self.fd is not None and time.monotonic() < deadline:
            with self._lock:
                if _unread_bytes(self.fd) == 0:
                    return
            time.sleep(0.002)

    def run(self) -> None:
        if _unread_bytes is None or self.fd is None:  # no FIONREAD (Windows): line by line, `drain` cannot help
            while raw := self._stream.readline(STDERR_LINE_BYTES):
                with self._lock:
                    self._relay(raw)
            return
        try:
            while True:
                select.select([self.fd], [], [])  # wait outside the lock; read and relay inside it
                with self._lock:
                    chunk = os.read(self.fd, 65536)
                    self._relay_chunk(chunk)
                if not chunk:
                    return
        except (OSError, ValueError):
            return  # the pipe was closed under us: the process is gone

    def _relay_chunk(self, chunk: bytes) -> None:
        """The whole lines of what was read so far; a line is cut at STDERR_LINE_BYTES; at EOF (b"") the last
        line goes even without its newline."""
        if not chunk:
            pieces, self._partial = ([self._partial] if self._partial else []), b""
        else:
            *lines, self._partial = (self._partial + chunk).split(b"\n")
            pieces = [line + b"\n" for line in lines]
            while len(self._partial) >= STDERR_LINE_BYTES:
                pieces.append(self._partial[:STDERR_LINE_BYTES])
                self._partial = self._partial[STDERR_LINE_BYTES:]
        for raw in pieces:
            self._relay(raw)

    def _relay(self, raw: bytes) -> None:
        if self._log_path is not None:
            try:
                with safefs.open_append_binary(self._log_path) as log:
                    log.write(raw)
            except (OSError, safefs.UnsafePath):
                pass  # the relay goes on: a full pipe would block the worker
        self._handle(raw.decode("utf-8", "replace").rstrip("\r\n"))


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    _unread_bytes = None
else:
    import fcntl
    import termios

    def _unread_bytes(fd: int) -> int:
        """Bytes in the pipe not read yet."""
        try:
            return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        except OSError:
            return 0
