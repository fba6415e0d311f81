"""Run one job: validate -> check inputs -> load (cached) -> run -> commit outputs -> envelope."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from workers.contract import (
    CONTRACT_MAJOR,
    CONTRACT_VERSION,
    EXIT_CODES,
    EXIT_SUCCESS,
    ErrorKind,
    Metrics,
    ResultEnvelope,
)

from .cache import ModelCache
from .context import JobContext
from .errors import InvalidInput, WorkerError, classify_exception
from .metrics import peak_rss_mb, peak_vram_mb, reset_peak_vram
from .outputs import OutputStage
from .paths import check_allowed
from .worker import Worker


def json_path(loc: tuple[Any, ...]) -> str:
    """pydantic error location -> JSON path (`$.segments[0].text`)."""
    path = "$"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [{"path": json_path(e["loc"]), "message": e["msg"], "type": e["type"]} for e in exc.errors()]


def _check_contract_version(raw: dict[str, Any]) -> None:
    version = raw.get("contract_version", CONTRACT_VERSION)
    if not isinstance(version, str):
        return  # schema validation reports the type error
    major = version.split(".", 1)[0]
    if major.isdigit() and int(major) != CONTRACT_MAJOR:
        raise InvalidInput(
            f"args contract_version {version} is not supported: this worker speaks {CONTRACT_VERSION} "
            f"(major {CONTRACT_MAJOR}); regenerate the args for contract {CONTRACT_MAJOR}.x",
            details={"field_errors": [{"path": "$.contract_version", "message": "unsupported major version",
                                       "type": "unsupported_version"}]},
        )


def validate_args(worker: Worker, raw: Any) -> Any:
    """Parse an args document into the worker's model, or raise InvalidInput listing every bad field."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"args must be a JSON object, got {type(raw).__name__}",
                           details={"field_errors": [{"path": "$", "message": "not an object", "type": "object_type"}]})
    _check_contract_version(raw)
    try:
        return worker.Args.model_validate(raw)
    except ValidationError as exc:
        errors = field_errors(exc)
        summary = "; ".join(f"{e['path']}: {e['message']}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise InvalidInput(f"invalid args for worker '{worker.name}': {summary}{more}",
                           details={"field_errors": errors}) from None


def failure_envelope(worker: Worker, error: WorkerError, metrics: Metrics | None = None,
                     warnings: list[str] | None = None) -> tuple[ResultEnvelope, int]:
    envelope = ResultEnvelope(worker=worker.name, worker_version=worker.version, success=False,
                              error=error.info(), metrics=metrics, warnings=warnings or [])
    return envelope, EXIT_CODES[error.kind]


def execute(worker: Worker, raw: Any, cache: ModelCache, request_id: str | int | None = None) -> tuple[ResultEnvelope, int]:
    """Never raises (except KeyboardInterrupt/SystemExit): every outcome is an envelope and an exit code."""
    started = time.perf_counter()
    load_s = run_s = 0.0
    stage: OutputStage | None = None
    ctx: JobContext | None = None
    cache_hit: bool | None = None

    def metrics() -> Metrics:
        return Metrics(load_s=round(load_s, 4), run_s=round(run_s, 4), peak_rss_mb=peak_rss_mb(),
                       peak_vram_mb=peak_vram_mb(), device=ctx.device if ctx else None,
                       model_cache_hit=cache_hit, model_loads=cache.loads,
                       **(ctx.extra_metrics if ctx else {}))

    try:
        args = validate_args(worker, raw)
        output_dir = check_allowed(args.output_dir, "output_dir")
        worker.check_inputs(args)
        reset_peak_vram()
        stage = OutputStage(Path(output_dir))
        ctx = JobContext(worker.name, stage, request_id)
        t0 = time.perf_counter()
        model, cache_hit = cache.get_or_load(worker.model_key(args), lambda: worker.load(args, ctx))
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = worker.run(model, args, ctx)
        if not isinstance(result, BaseModel):
            result = worker.Result.model_validate(result)
        run_s = time.perf_counter() - t0
        outputs = stage.commit()
        stage = None
        envelope = ResultEnvelope(worker=worker.name, worker_version=worker.version, success=True,
                                  result=result.model_dump(mode="json"), outputs=outputs,
                                  metrics=metrics(), warnings=ctx.warnings)
        return envelope, EXIT_SUCCESS
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure becomes data
        error = classify_exception(exc)
        if load_s == 0.0 and cache_hit is None and ctx is not None:
            load_s = time.perf_counter() - started  # failed while loading
        job_metrics = metrics() if ctx is not None else None
        return failure_envelope(worker, error, job_metrics, ctx.warnings if ctx else None)
    finally:
        if stage is not None:
            stage.discard()


__all__ = ["ErrorKind", "execute", "failure_envelope", "field_errors", "json_path", "validate_args"]
