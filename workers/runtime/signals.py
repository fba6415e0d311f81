"""SIGTERM/SIGINT: unwind a running job like Ctrl-C, but never while its outputs are committed or its answer written.

Python runs signal handlers in the main thread, whichever thread the kernel delivered the signal to, so
blocking the signal in one thread (pthread_sigmask) does not protect anything when torch or OpenMP threads
exist. Instead the handler looks at a gate: while the gate is held, the signal is remembered and acted on when
the gate is released. The engine holds it from the moment it starts committing outputs (the job then finishes
and answers truthfully); the protocol stream holds it while it writes a line.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import TransientError


class Cancelled(KeyboardInterrupt):
    """SIGTERM (or SIGINT) arrived: unwind like Ctrl-C so staged outputs are discarded, then answer."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signal_name = signal.Signals(signum).name


class _Gate:
    def __init__(self) -> None:
        self.depth = 0
        self.pending: int | None = None
        self.job_held = False

    def handler(self, signum: int, frame) -> None:
        if self.depth:
            self.pending = signum  # acted on when the gate opens
            return
        raise Cancelled(signum)

    def hold(self) -> None:
        self.depth += 1

    def release(self) -> None:
        """Open one level; at the last one, a remembered signal is raised now."""
        self.depth = max(0, self.depth - 1)
        if not self.depth and self.pending is not None:
            signum, self.pending = self.pending, None
            raise Cancelled(signum)

    def hold_job(self) -> None:
        """The job is committing: from now on it finishes and answers; `end_job` after the answer is written."""
        if not self.job_held:
            self.job_held = True
            self.hold()

    def end_job(self) -> None:
        """The answer is out: open the job's hold (a remembered signal is raised now, for the next request)."""
        if self.job_held:
            self.job_held = False
            self.release()

    def forget(self) -> int | None:
        """Open the gate completely and drop a remembered signal (the job it would have stopped is answered)."""
        self.depth, self.job_held = 0, False
        signum, self.pending = self.pending, None
        return signum


GATE = _Gate()


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGTERM/SIGINT for the duration; one that arrived meanwhile is raised at the end."""
    GATE.hold()
    try:
        yield
    finally:
        GATE.release()


def install() -> None:
    """Route SIGTERM and SIGINT through the gate (main thread only; elsewhere the defaults stay)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(signum, GATE.handler)
        except (ValueError, OSError, AttributeError):  # not the main thread, or no such signal on this platform
            pass


def cancelled_error(exc: KeyboardInterrupt) -> TransientError:
    """The answer to a job stopped by a signal: `transient`, with `details.cancelled` so a host that sent the
    signal itself (its own timeout) can tell it from a failure."""
    name = getattr(exc, "signal_name", "SIGINT")
    return TransientError(f"cancelled by {name} before the job finished; no output was kept and it is safe to run "
                          "it again", details={"cancelled": True, "signal": name})
