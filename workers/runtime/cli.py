"""`python -m workers.<name>`: one-shot (default), --serve, --schema, --describe."""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

import orjson

from workers.contract import CONTRACT_VERSION, EXIT_CODES, EXIT_SUCCESS, ErrorKind

from .cache import ModelCache
from .engine import execute, failure_envelope
from .errors import InvalidInput, TransientError
from .events import emit, install_log_handler
from .stdio import ProtocolStream, dumps, force_utf8
from .worker import Worker


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would print usage and exit 2 without JSON
        raise _UsageError(message)


def _parser(worker: Worker) -> _Parser:
    p = _Parser(prog=f"python -m workers.{worker.name}",
                description=f"storybridge {worker.name} worker {worker.version} (contract {CONTRACT_VERSION}). "
                "Prints exactly one JSON result envelope on stdout; logs and progress go to stderr as JSON lines.")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--input", metavar="ARGS.json", help="args file ('-' reads the args from stdin)")
    mode.add_argument("--serve", action="store_true", help="warm mode: JSON-lines requests on stdin, responses on stdout")
    mode.add_argument("--schema", action="store_true", help="print this worker's args and result JSON schemas")
    mode.add_argument("--describe", action="store_true", help="print name, versions and devices (loads no model)")
    p.add_argument("--output", metavar="RESULT.json", help="also write the envelope to this file (atomically)")
    return p


def read_args_file(path: str) -> Any:
    """The args document, UTF-8 (a BOM from e.g. a .NET writer is tolerated)."""
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read args file {path!r}: {exc.strerror or exc}") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"args file {path!r} is not valid UTF-8 JSON: {exc}") from None


def write_atomic(path: str, data: bytes) -> None:
    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def describe(worker: Worker) -> dict[str, Any]:
    try:
        devices = worker.devices()
    except Exception as exc:  # noqa: BLE001 - describing must not fail on a broken driver
        devices = ["cpu"]
        emit("log", worker=worker.name, level="warning", message=f"device probe failed: {exc}")
    return {"name": worker.name, "version": worker.version, "contract_version": CONTRACT_VERSION,
            "devices": devices, "python": platform.python_version(), "platform": sys.platform, "pid": os.getpid()}


def schemas(worker: Worker) -> dict[str, Any]:
    return {"contract_version": CONTRACT_VERSION, "worker": worker.name,
            "args": worker.Args.model_json_schema(mode="validation"),
            "result": worker.Result.model_json_schema(mode="serialization")}


def _terminate_as_interrupt() -> None:
    """SIGTERM unwinds like Ctrl-C: staged outputs are discarded and an envelope is still written."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # not the main thread, or a platform without SIGTERM handlers
        pass


def main(worker: Worker, argv: list[str] | None = None) -> int:
    force_utf8()
    _terminate_as_interrupt()
    protocol = ProtocolStream.take_stdout()
    install_log_handler(worker.name)
    try:
        opts = _parser(worker).parse_args(argv)
    except _UsageError as exc:
        envelope, code = failure_envelope(worker, InvalidInput(f"usage: {exc} (see --help)"))
        protocol.write_json(envelope.model_dump(mode="json"))
        return code
    except SystemExit as exc:  # --help: argparse printed to (redirected) stdout = stderr
        if exc.code == 0:
            return EXIT_SUCCESS
        raise

    if opts.schema:
        protocol.write_json(schemas(worker))
        return EXIT_SUCCESS
    if opts.describe:
        protocol.write_json(describe(worker))
        return EXIT_SUCCESS
    if opts.serve:
        from .serve import serve

        return serve(worker, protocol)

    try:
        raw = read_args_file(opts.input)
    except InvalidInput as exc:
        envelope, code = failure_envelope(worker, exc)
    else:
        cache = ModelCache(on_evict=worker.unload)
        try:
            envelope, code = execute(worker, raw, cache)
        except KeyboardInterrupt:  # SIGINT, or SIGTERM via _terminate_as_interrupt; staged outputs are already gone
            envelope, code = failure_envelope(
                worker, TransientError("interrupted by a signal before the job finished; it is safe to run it again"))
    document = envelope.model_dump(mode="json")
    if opts.output:
        try:
            write_atomic(opts.output, dumps(document) + b"\n")
        except OSError as exc:
            document["warnings"].append(f"could not write --output {opts.output!r}: {exc}")
    protocol.write_json(document)
    return code


def run_worker(worker: Worker) -> NoReturn:
    """Entry point for `workers/<name>/__main__.py`."""
    try:
        code = main(worker)
    except KeyboardInterrupt:
        code = EXIT_CODES[ErrorKind.transient]
    sys.stdout.flush()
    sys.exit(code)
