"""`python -m workers.<name>`: one-shot (--input ARGS.json, or -i KEY=VALUE ... -o DIR), --serve, --schema, --describe."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import orjson

from workers.contract import CONTRACT_VERSION, EXIT_CODES, EXIT_SUCCESS, ErrorKind, WorkerDescription

from . import signals
from .cache import ModelCache
from .engine import execute, failure_envelope
from .errors import InvalidInput, ResourceExhausted
from .events import emit, install_log_handler
from .keyvalue import parse_assignments
from .schema_help import render_args_help
from .stdio import ProtocolStream, dumps, force_utf8, quiet_progress_bars
from .worker import Worker


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as data and prints `--help` on the protocol stream (the real stdout)."""

    def __init__(self, *args: Any, help_stream: ProtocolStream | None = None,
                 args_help: Callable[[], str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.help_stream = help_stream
        self.args_help = args_help  # rendered only when help is asked for: a host's one-shot call never pays for it

    def format_help(self) -> str:
        if self.args_help is not None and self.epilog is None:
            self.epilog = self.args_help()
        return super().format_help()

    def error(self, message: str) -> NoReturn:  # argparse would print usage and exit 2 without JSON
        raise _UsageError(message)

    def print_help(self, file=None) -> None:
        if self.help_stream is None or file is not None:
            super().print_help(file)
        else:  # stdout is fd-redirected to stderr while a worker runs; help is an answer, so it goes to stdout
            self.help_stream.write_bytes(self.format_help().rstrip("\n").encode("utf-8"))


def _parser(worker: Worker, help_stream: ProtocolStream | None = None) -> _Parser:
    prog = f"python -m workers.{worker.name}"
    p = _Parser(prog=prog, help_stream=help_stream, formatter_class=argparse.RawDescriptionHelpFormatter,
                description=f"storybridge {worker.name} worker {worker.version} (contract {CONTRACT_VERSION}). "
                "Prints exactly one JSON result envelope on stdout; logs and progress go to stderr as JSON lines.",
                args_help=lambda: render_args_help(worker.Args.model_json_schema(mode="validation"))
                + f"\n\nexample:\n  {prog} -i KEY=VALUE -i KEY=VALUE -o OUT_DIR --pretty")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--input", metavar="ARGS.json", help="args file ('-' reads the args from stdin)")
    mode.add_argument("--serve", action="store_true", help="warm mode: JSON-lines requests on stdin, responses on stdout")
    mode.add_argument("--schema", action="store_true", help="print this worker's args and result JSON schemas")
    mode.add_argument("--describe", action="store_true", help="print name, versions and devices (loads no model)")
    p.add_argument("-i", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="one arg, typed by the schema (repeatable; instead of --input, or on top of it)")
    p.add_argument("-o", "--output-dir", metavar="DIR", help="sets output_dir")
    p.add_argument("--pretty", action="store_true", help="indent the JSON answer for people")
    p.add_argument("--output", metavar="RESULT.json", help="also write the envelope to this file (atomically)")
    return p


def _check_combination(opts: argparse.Namespace) -> None:
    one_shot_only = opts.assignments or opts.output_dir is not None
    if (opts.serve or opts.schema or opts.describe) and one_shot_only:
        raise _UsageError("-i and -o go with a one-shot job, not with "
                          "--serve, --schema or --describe")
    if not (opts.input or opts.serve or opts.schema or opts.describe or one_shot_only):
        raise _UsageError("give the args: --input ARGS.json or -i KEY=VALUE ... (or --serve, --schema, --describe)")


def _unreadable(message: str, type_: str) -> InvalidInput:
    return InvalidInput(message, type_=type_)


def read_args_file(path: str) -> Any:
    """The args document, UTF-8 JSON (a BOM from e.g. a .NET writer is tolerated).

    Every way the document can be unreadable is `invalid_input` with a `$` field error saying which."""
    source = "args on stdin" if path == "-" else f"args file {path!r}"
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except IsADirectoryError:
        raise _unreadable(f"{source} is a directory, not a file", "args_unreadable") from None
    except OSError as exc:
        raise _unreadable(f"cannot read {source}: {exc.strerror or exc}", "args_unreadable") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        raise _unreadable(f"{source} is empty; expected a JSON object", "args_empty")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _unreadable(f"{source} is UTF-16; write it as UTF-8 (e.g. new UTF8Encoding(false) in .NET)",
                          "args_encoding")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _unreadable(f"{source} is not valid UTF-8 (byte {exc.start}); write it as UTF-8", "args_encoding") from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _unreadable(f"{source} is not valid JSON: {exc}", "args_json") from None


def command_line_args(worker: Worker, opts: argparse.Namespace) -> Any:
    """The args document: the --input file (if any), then each -i KEY=VALUE and -o DIR on top of it."""
    raw = read_args_file(opts.input) if opts.input else {}
    if not (opts.assignments or opts.output_dir is not None):
        return raw
    given, problems = parse_assignments(worker.Args.model_json_schema(mode="validation"), opts.assignments)
    if opts.output_dir is not None:
        if "output_dir" in given:
            problems.add("$.output_dir", "given twice (-i output_dir=... and -o); give it once", "duplicate")
        given["output_dir"] = opts.output_dir
    problems.raise_if_any(f"invalid -i args for worker '{worker.name}'")
    return {**raw, **given} if isinstance(raw, dict) else raw


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
    """The `--describe` answer (schemas/describe.schema.json)."""
    try:
        devices = worker.devices()
    except Exception as exc:  # noqa: BLE001 - describing must not fail on a broken driver
        devices = ["cpu"]
        emit("log", worker=worker.name, level="warning", message=f"device probe failed: {exc}")
    return WorkerDescription(name=worker.name, version=worker.version, contract_version=CONTRACT_VERSION,
                             devices=devices, python=platform.python_version(), platform=sys.platform,
                             pid=os.getpid(), warm=True,
                             model_key_fields=list(worker.model_key_fields)).model_dump(mode="json")


def schemas(worker: Worker) -> dict[str, Any]:
    return {"contract_version": CONTRACT_VERSION, "worker": worker.name,
            "args": worker.Args.model_json_schema(mode="validation"),
            "result": worker.Result.model_json_schema(mode="serialization")}


def main(worker: Worker, argv: list[str] | None = None) -> int:
    force_utf8()
    quiet_progress_bars()
    signals.install()
    protocol = ProtocolStream.take_stdout()
    install_log_handler(worker.name)
    try:
        opts = _parser(worker, protocol).parse_args(argv)
        _check_combination(opts)
    except _UsageError as exc:
        message = f"usage: {exc} (see --help)"
        envelope, code = failure_envelope(worker, InvalidInput(message, type_="usage"))
        protocol.write_json(envelope.model_dump(mode="json"))
        return code
    except SystemExit as exc:  # --help: printed on the protocol stream
        if exc.code == 0:
            return EXIT_SUCCESS
        raise

    if opts.schema:
        protocol.write_json(schemas(worker), pretty=opts.pretty)
        return EXIT_SUCCESS
    if opts.describe:
        protocol.write_json(describe(worker), pretty=opts.pretty)
        return EXIT_SUCCESS
    if opts.serve:
        from .serve import serve

        global _SERVED
        _SERVED = True
        return serve(worker, protocol)

    # Rendered now, while memory is plentiful: the answer when even building an envelope fails.
    out_of_memory_answer = dumps(failure_envelope(worker, ResourceExhausted(
        "Out of memory: the worker could not even build its answer. Free memory or retry later."))[0]
        .model_dump(mode="json"))
    try:
        document, code = _one_shot(worker, opts)
    except MemoryError:
        document, code = None, EXIT_CODES[ErrorKind.resource]
    except KeyboardInterrupt as exc:  # a signal after the job failed, before its answer was built
        envelope, code = failure_envelope(worker, signals.cancelled_error(exc))
        document = envelope.model_dump(mode="json")
    signals.GATE.hold()  # the answer goes out whole, and it stands: a signal now changes neither it nor the exit
    if document is None:
        protocol.write_bytes(out_of_memory_answer)
    else:
        protocol.write_json(document, pretty=opts.pretty)
    signals.GATE.forget()
    return code


def _one_shot(worker: Worker, opts: argparse.Namespace) -> tuple[dict[str, Any], int]:
    try:
        raw = command_line_args(worker, opts)
        envelope, code = execute(worker, raw, ModelCache(on_evict=worker.unload))
    except InvalidInput as exc:
        envelope, code = failure_envelope(worker, exc)
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM via Cancelled; staged outputs are already gone
        envelope, code = failure_envelope(worker, signals.cancelled_error(exc))
    document = envelope.model_dump(mode="json")
    if opts.output:
        try:
            write_atomic(opts.output, dumps(document) + b"\n")
        except OSError as exc:
            document["warnings"].append(f"could not write --output {opts.output!r}: {exc}")
    return document, code


#: Set when `main` ran the `--serve` loop.
_SERVED = False


def run_worker(worker: Worker) -> NoReturn:
    """Entry point for `workers/<name>/__main__.py`."""
    try:
        code = main(worker)
    except KeyboardInterrupt:
        code = EXIT_CODES[ErrorKind.transient]
    sys.stdout.flush()
    if _SERVED:
        # The serve loop is over: every answer is written and every model released (its cache cleared). With
        # torch loaded, interpreter teardown alone takes a second or more, and a runner stopping a pipeline's
        # warm processes waits for each: leave now.
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
