"""Warm mode: one process, many requests, models kept loaded between them."""

from __future__ import annotations

import os
import sys

import orjson
from pydantic import ValidationError

from workers.contract import EXIT_SUCCESS
from workers.contract.serve import ServePong, ServeReady, ServeRequest, ServeResult, ServeShutdown

from .cache import ModelCache
from .engine import execute, failure_envelope, field_errors
from .errors import InvalidInput
from .stdio import ProtocolStream
from .worker import Worker


def _respond_error(protocol: ProtocolStream, worker: Worker, request_id, error: InvalidInput) -> None:
    envelope, _ = failure_envelope(worker, error)
    protocol.write_json(ServeResult(**envelope.model_dump(), id=request_id).model_dump(mode="json"))


def serve(worker: Worker, protocol: ProtocolStream) -> int:
    cache = ModelCache(on_evict=worker.unload)
    protocol.write_json(ServeReady(worker=worker.name, worker_version=worker.version, pid=os.getpid()).model_dump(mode="json"))
    try:
        for line in sys.stdin.buffer:
            line = line.strip()
            if not line:
                continue
            try:
                message = orjson.loads(line.removeprefix(b"\xef\xbb\xbf"))
            except orjson.JSONDecodeError as exc:
                _respond_error(protocol, worker, None, InvalidInput(f"request is not valid JSON: {exc}"))
                continue
            request_id = message.get("id") if isinstance(message, dict) else None
            if not isinstance(request_id, (str, int)) or isinstance(request_id, bool):
                request_id = None
            try:
                request = ServeRequest.model_validate(message)
            except ValidationError as exc:
                _respond_error(protocol, worker, request_id,
                               InvalidInput("invalid request: " + "; ".join(f"{e['path']}: {e['message']}" for e in field_errors(exc)),
                                            details={"field_errors": field_errors(exc)}))
                continue
            if request.op == "ping":
                protocol.write_json(ServePong(id=request.id, loaded_models=cache.keys()).model_dump(mode="json"))
            elif request.op == "shutdown":
                protocol.write_json(ServeShutdown(id=request.id).model_dump(mode="json"))
                break
            elif request.args is None:
                _respond_error(protocol, worker, request.id, InvalidInput("a run request needs `args`"))
            else:
                envelope, _ = execute(worker, request.args, cache, request_id=request.id)
                protocol.write_json(ServeResult(**envelope.model_dump(), id=request.id).model_dump(mode="json"))
    finally:
        cache.clear()
    return EXIT_SUCCESS
