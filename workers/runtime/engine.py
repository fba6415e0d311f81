"""Run one job: validate -> check inputs -> load (cached) -> run -> commit outputs -> envelope."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from workers.contract import EXIT_CODES, EXIT_SUCCESS, ErrorKind, Metrics, ResultEnvelope

from .cache import ModelCache
from .context import JobContext
from .errors import FieldErrors, ModelUnavailable, WorkerError, classify_exception
from .metrics import peak_rss_mb, peak_vram_mb, reset_peak_vram
from .outputs import OutputStage
from .paths import check_output_dir
from .signals import GATE
from .validation import validate_document
from .worker import Worker


def validate_args(worker: Worker, raw: Any) -> Any:
    """Parse an args document into the worker's model, or raise InvalidInput listing every bad field."""
    return validate_document(worker.Args, raw, worker.name)


def check_job_inputs(worker: Worker, args: Any) -> Path:
    """The worker-side checks the schema cannot express (paths, files), all reported in one answer."""
    problems = FieldErrors()
    output_dir = problems.attempt(check_output_dir, args.output_dir)
    problems.attempt(worker.check_inputs, args)
    problems.raise_if_any(f"invalid input for worker '{worker.name}'")
    assert output_dir is not None
    return output_dir


def missing_module_error(worker: Worker, modules: list[str]) -> ModelUnavailable:
    install = f"pip install 'storybridge[{worker.extra}]'" if worker.extra else "install the worker's dependencies"
    names = ", ".join(repr(m) for m in modules)
    return ModelUnavailable(f"worker '{worker.name}' needs the Python package(s) {names}, which are not installed: "
                            f"{install}", details={"missing_modules": modules, "extra": worker.extra})


def failure_envelope(worker: Worker, error: WorkerError, metrics: Metrics | None = None,
                     warnings: list[str] | None = None) -> tuple[ResultEnvelope, int]:
    envelope = ResultEnvelope(worker=worker.name, worker_version=worker.version, success=False,
                              error=error.info(), metrics=metrics, warnings=warnings or [])
    return envelope, EXIT_CODES[error.kind]


class _Job:
    """Timings and state of one job, so a failure at any stage still reports what is known."""

    def __init__(self, cache: ModelCache):
        self.cache = cache
        self.stage_name = "validating args"
        self.load_s = self.run_s = 0.0
        self.ctx: JobContext | None = None
        self.cache_hit: bool | None = None

    def metrics(self) -> Metrics | None:
        if self.ctx is None:
            return None
        return Metrics(load_s=round(self.load_s, 4), run_s=round(self.run_s, 4), peak_rss_mb=peak_rss_mb(),
                       peak_vram_mb=peak_vram_mb(), device=self.ctx.device, model_cache_hit=self.cache_hit,
                       model_loads=self.cache.loads, **self.ctx.extra_metrics)


def execute(worker: Worker, raw: Any, cache: ModelCache, request_id: str | int | None = None) -> tuple[ResultEnvelope, int]:
    """Never raises (except KeyboardInterrupt/SystemExit): every outcome is an envelope and an exit code."""
    job = _Job(cache)
    stage: OutputStage | None = None
    try:
        args = validate_args(worker, raw)
        job.stage_name = "checking inputs"
        missing = worker.missing_modules()  # before the input checks, which may need them (whisper probes with av)
        if missing:
            raise missing_module_error(worker, missing)
        output_dir = check_job_inputs(worker, args)
        reset_peak_vram()
        job.stage_name = "preparing the output directory"
        stage = OutputStage(output_dir)
        job.ctx = JobContext(worker.name, stage, request_id)
        job.stage_name = "loading the model"
        t0 = time.perf_counter()
        model, job.cache_hit = cache.get_or_load(worker.model_key(args), lambda: worker.load(args, job.ctx))
        job.load_s = time.perf_counter() - t0
        job.ctx.device = worker.device_of(model)  # from the model itself: right on a warm cache hit too
        job.stage_name = "running the job"
        t0 = time.perf_counter()
        result = worker.run(model, args, job.ctx)
        if not isinstance(result, BaseModel):
            result = worker.Result.model_validate(result)
        job.run_s = time.perf_counter() - t0
        job.stage_name = "writing outputs"
        GATE.hold_job()  # from here the job finishes and answers truthfully; the caller ends the hold after answering
        outputs = stage.commit()
        stage = None
        envelope = ResultEnvelope(worker=worker.name, worker_version=worker.version, success=True,
                                  result=result.model_dump(mode="json"), outputs=outputs,
                                  metrics=job.metrics(), warnings=job.ctx.warnings)
        return envelope, EXIT_SUCCESS
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure becomes data
        if isinstance(exc, ModuleNotFoundError) and exc.name:  # a dependency missing, found only when imported
            error = missing_module_error(worker, [exc.name.split(".")[0]])
        else:
            error = classify_exception(exc, job.stage_name)
        if job.stage_name == "loading the model":
            job.load_s = time.perf_counter() - t0
        return failure_envelope(worker, error, job.metrics(), job.ctx.warnings if job.ctx else None)
    finally:
        if stage is not None:
            stage.discard()


__all__ = ["ErrorKind", "check_job_inputs", "execute", "failure_envelope", "validate_args"]
