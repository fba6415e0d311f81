"""Warm mode: one process, many requests, models kept loaded between them.

Exit codes: 0 after a `shutdown` request or end of stdin; 5 (transient) after SIGTERM/SIGINT, once the job in
flight (if any) was answered with a cancelled `transient` result and a `shutdown` line with reason `signal`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import orjson
from pydantic import ValidationError

from workers.contract import EXIT_CODES, EXIT_SUCCESS, ErrorKind
from workers.contract.serve import ServePong, ServeReady, ServeRequest, ServeResult, ServeShutdown

from .cache import ModelCache
from .engine import execute, failure_envelope
from .errors import InvalidInput, WorkerError
from .signals import GATE, cancelled_error, signals_deferred
from .stdio import ProtocolStream
from .validation import pydantic_field_errors
from .worker import Worker


def _respond_error(protocol: ProtocolStream, worker: Worker, request_id, error: WorkerError) -> None:
    envelope, _ = failure_envelope(worker, error)
    protocol.write_json(ServeResult(**envelope.model_dump(), id=request_id).model_dump(mode="json"))


def _request_id(message: Any) -> str | int | None:
    request_id = message.get("id") if isinstance(message, dict) else None
    return request_id if isinstance(request_id, (str, int)) and not isinstance(request_id, bool) else None


def _parse(line: bytes) -> tuple[ServeRequest | None, str | int | None, InvalidInput | None]:
    """(request, id, error): a request line, or the invalid_input answer it deserves."""
    try:
        message = orjson.loads(line.removeprefix(b"\xef\xbb\xbf"))
    except orjson.JSONDecodeError as exc:
        text = f"request is not valid JSON: {exc}"
        return None, None, InvalidInput(text, type_="request_json")
    request_id = _request_id(message)
    try:
        request = ServeRequest.model_validate(message)
    except ValidationError as exc:
        errors = pydantic_field_errors(exc)
        text = "invalid request: " + "; ".join(f"{e['path']}: {e['message']}" for e in errors)
        return None, request_id, InvalidInput(text, details={"field_errors": errors})
    if request.op == "run" and request.args is None:
        text = "a run request needs `args`"
        return None, request.id, InvalidInput.for_field("$.args", text, type_="missing")
    return request, request.id, None


class _Session:
    """What a signal handler needs to know: is a job in flight, and under which id."""

    def __init__(self) -> None:
        self.running = False
        self.request_id: str | int | None = None


def _loop(worker: Worker, protocol: ProtocolStream, cache: ModelCache, session: _Session) -> None:
    for line in sys.stdin.buffer:
        line = line.strip()
        if not line:
            continue
        request, request_id, error = _parse(line)
        if error is not None:
            _respond_error(protocol, worker, request_id, error)
        elif request.op == "ping":
            protocol.write_json(ServePong(id=request.id, loaded_models=cache.keys()).model_dump(mode="json"))
        elif request.op == "shutdown":
            protocol.write_json(ServeShutdown(id=request.id).model_dump(mode="json"))
            return
        else:
            session.request_id, session.running = request.id, True
            envelope, _ = execute(worker, request.args, cache, request_id=request.id)
            with signals_deferred():  # answered and marked done together: a signal never answers it twice
                protocol.write_json(ServeResult(**envelope.model_dump(), id=request.id).model_dump(mode="json"))
                session.running = False
            GATE.end_job()  # a signal that waited for this answer is raised now


def serve(worker: Worker, protocol: ProtocolStream) -> int:
    cache = ModelCache(on_evict=worker.unload)
    session = _Session()
    try:
        try:
            # inside the try: a signal that arrives the moment `ready` is out is still answered
            protocol.write_json(ServeReady(worker=worker.name, worker_version=worker.version,
                                           pid=os.getpid()).model_dump(mode="json"))
            _loop(worker, protocol, cache, session)
        finally:
            cache.clear()
    except KeyboardInterrupt as exc:  # SIGTERM/SIGINT, even one that lands after stdin closed: answer, say why, exit 5
        GATE.hold()  # the last lines go out whole; further signals change nothing
        if session.running:
            _respond_error(protocol, worker, session.request_id, cancelled_error(exc))
        protocol.write_json(ServeShutdown(reason="signal").model_dump(mode="json"))
        GATE.forget()
        return EXIT_CODES[ErrorKind.transient]
    return EXIT_SUCCESS
