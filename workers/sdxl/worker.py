"""The SDXL keyframe worker: one image per prompt, batched, seeded per image, memory-aware, warm.

Recipe: check_inputs (names unique, LoRA files, offload needs a GPU; no torch yet) -> load (cached per model,
refiner, device, dtype, variant, offload) -> per request: scheduler, memory options, LoRAs -> generate in
batches through the OOM ladder -> detect NaN/black and re-decode in fp32 -> fit to the delivery size -> save
with the parameters embedded.
"""

from __future__ import annotations

import secrets
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.runtime import FieldErrors, InvalidInput, JobContext, Worker, input_file
from workers.runtime.devices import dtype_name, offload_problem, torch_device
from workers.runtime.imaging import fit
from workers.runtime.oom_ladder import MemoryLadder

from . import __version__, images, pipeline
from .contract import MAX_SEED, Args, ImageResult, PromptItem, Result
from .sizes import generation_size

_SAFETENSORS_MAX_HEADER_BYTES = 100 * 1024 * 1024
#: Out-of-memory rungs, cheapest first (docs/sdxl.md).
LADDER = ("vae_tiling", "smaller_batch", "model_offload", "sequential_offload")


@dataclass
class Job:
    """One image to make: the item with its defaults resolved."""

    index: int
    name: str
    prompt: str
    negative_prompt: str | None
    seed: int
    seed_drawn: bool


def output_name(item: PromptItem, index: int) -> str:
    """The item's file stem: its own name, else `keyframe_NN` (1-based)."""
    return item.name or f"keyframe_{index + 1:02d}"


def plan(args: Args) -> list[Job]:
    jobs = []
    for index, item in enumerate(args.items()):
        seed_drawn = item.seed is None
        jobs.append(Job(index=index, name=output_name(item, index), prompt=item.prompt,
                        negative_prompt=item.negative_prompt if item.negative_prompt is not None else args.negative_prompt,
                        seed=secrets.randbelow(MAX_SEED + 1) if seed_drawn else item.seed, seed_drawn=seed_drawn))
    return jobs


def check_safetensors(path: Path) -> str | None:
    """Why `path` is not a readable safetensors file, or None. Reads only the header (no torch)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return "is too short to be a safetensors file"
            (length,) = struct.unpack("<Q", head)
            if length > _SAFETENSORS_MAX_HEADER_BYTES or length + 8 > path.stat().st_size:
                return "is not a safetensors file (bad header length)"
            header = f.read(length)
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    import json

    try:
        return None if isinstance(json.loads(header), dict) else "is not a safetensors file (header is not an object)"
    except (ValueError, RecursionError):
        return "is not a safetensors file (header is not JSON)"


class SdxlWorker(Worker[Args, Result]):
    name = "sdxl"
    version = __version__
    Args = Args
    Result = Result
    extra = "sdxl"
    requires = ("torch", "diffusers", "transformers", "accelerate", "peft", "PIL", "safetensors")

    # --- cheap checks, no torch ----------------------------------------------------------------------------
    def check_inputs(self, args: Args) -> None:
        problems = FieldErrors()
        seen: dict[str, int] = {}
        for index, item in enumerate(args.items()):
            name = output_name(item, index)
            if name in seen:
                problems.add(f"$.prompts[{index}]" + (".name" if isinstance(args.prompts[index], PromptItem) else ""),
                             f"output name {name!r} is also used by prompts[{seen[name]}]; names must be unique",
                             "duplicate_name")
            seen.setdefault(name, index)
        for index, lora in enumerate(args.loras):
            resolved = problems.attempt(input_file, lora.path, f"loras[{index}].path")  # exists, readable, under roots
            reason = check_safetensors(resolved) if resolved is not None else None
            if reason:
                problems.add(f"$.loras[{index}].path", f"LoRA {lora.path!r} {reason}", "bad_file")
        offload = offload_problem(args.offload)
        if offload:
            problems.add("$.offload", offload, "offload")
        problems.raise_if_any(f"invalid input for worker '{self.name}'")

    model_key_fields = ("model", "refiner", "device", "dtype", "variant", "offload")

    def model_key(self, args: Args) -> str:
        refiner = args.refiner.model if args.refiner else None
        return f"{args.model}|refiner={refiner}|{args.device}|{args.dtype}|{args.variant}|offload={args.offload}"

    # --- load ------------------------------------------------------------------------------------------------
    def load(self, args: Args, ctx: JobContext) -> pipeline.SdxlModel:
        base_dir, refiner_dir = pipeline.model_dirs(args)  # before torch: a missing model fails fast
        device = torch_device(args.device)
        offload = offload_problem(args.offload, device)
        if offload:
            raise InvalidInput.for_field("offload", offload, type_="offload")
        dtype = dtype_name(args.dtype, device, cuda_default="float16")
        ctx.progress(0.0, "loading model", model=args.model, device=device, dtype=dtype)
        return pipeline.load(args, device, dtype, base_dir, refiner_dir)

    # --- run -------------------------------------------------------------------------------------------------
    def run(self, model: pipeline.SdxlModel, args: Args, ctx: JobContext) -> Result:
        jobs = plan(args)
        width, height = generation_size(args, model.native_side)
        if width * height < (model.native_side // 2) ** 2:
            ctx.warn(f"{width}x{height} is well below this model's native {model.native_side}x{model.native_side}: "
                     "expect weak images")
        scheduler = pipeline.prepare(model, args)
        ladder = MemoryLadder(LADDER, batch_size=args.batch_size, accelerator=model.device.startswith("cuda"),
                              already_on=frozenset({"vae_tiling"} if args.vae_tiling else ()),
                              apply=lambda rung: pipeline.apply_rung(model, rung), warn=ctx.warn)
        generator = _Generator(model, args, ctx, width, height, total=len(jobs))
        results: list[ImageResult] = []
        with pipeline.loras(model, args.loras):
            for group in _groups(jobs):
                for job, pixels, seconds in ladder.run(group, generator.generate):
                    results.append(self._save(job, pixels, seconds, generator.redecoded.get(job.index, False),
                                              args, ctx, width, height, scheduler))
        ctx.extra_metrics.update(images=len(results), memory_rung=ladder.rung, batch_size_used=ladder.batch_size,
                                 width=width, height=height, offload=model.offload)
        ctx.progress(1.0, "done", images=len(results))
        return Result(images=sorted(results, key=lambda r: r.index), model=args.model,
                      refiner=args.refiner.model if args.refiner else None, device=model.device, dtype=model.dtype,
                      scheduler=scheduler, steps=args.steps, guidance_scale=args.guidance_scale,
                      batch_size=args.batch_size, memory_rung=ladder.rung, loras=args.loras)

    @staticmethod
    def _save(job: Job, pixels, seconds: float, redecoded: bool, args: Args, ctx: JobContext,
              width: int, height: int, scheduler: str) -> ImageResult:
        image = images.to_pil(pixels)
        if args.output_size is not None:
            image = fit(image, args.output_size)
        file_name = f"{job.name}.{images.EXTENSIONS[args.image_format]}"
        params = {"prompt": job.prompt, "negative_prompt": job.negative_prompt, "seed": job.seed, "steps": args.steps,
                  "guidance_scale": args.guidance_scale, "scheduler": args.scheduler or scheduler, "model": args.model,
                  "refiner": args.refiner.model if args.refiner else None, "width": width, "height": height,
                  "output_size": [image.width, image.height], "loras": [lo.model_dump() for lo in args.loras],
                  "worker": f"storybridge-sdxl {__version__}"}
        images.save(image, ctx.output_path(file_name, images.MEDIA_TYPES[args.image_format]), args.image_format,
                    args.quality, params)
        return ImageResult(index=job.index, name=job.name, path=str(ctx.final_path(file_name)), prompt=job.prompt,
                           negative_prompt=job.negative_prompt, seed=job.seed, seed_drawn=job.seed_drawn,
                           width=image.width, height=image.height, generated_width=width, generated_height=height,
                           seconds=round(seconds, 4), fp32_vae_redecode=redecoded)


def _groups(jobs: list[Job]) -> list[list[Job]]:
    """Consecutive jobs that can share a pipeline call. diffusers encodes "no negative prompt" as zeros and "" as
    the empty text, so items with and without a negative prompt never share a call (it would change images)."""
    groups: list[list[Job]] = []
    for job in jobs:
        if groups and (groups[-1][0].negative_prompt is None) == (job.negative_prompt is None):
            groups[-1].append(job)
        else:
            groups.append([job])
    return groups


class _Generator:
    """One pipeline call per chunk: a generator per image, a progress event per denoising step."""

    def __init__(self, model: pipeline.SdxlModel, args: Args, ctx: JobContext, width: int, height: int, total: int):
        self.model, self.args, self.ctx = model, args, ctx
        self.width, self.height, self.total = width, height, total
        self.done = 0
        self.redecoded: dict[int, bool] = {}

    def generate(self, chunk: list[Job]) -> list[tuple[Job, Any, float]]:
        import torch

        t0 = time.perf_counter()
        generators = [torch.Generator("cpu").manual_seed(job.seed) for job in chunk]  # CPU: same on every device
        final: dict[str, Any] = {}
        call = {"prompt": [j.prompt for j in chunk], "generator": generators, "width": self.width,
                "height": self.height, "num_inference_steps": self.args.steps,
                "guidance_scale": self.args.guidance_scale}
        if chunk[0].negative_prompt is not None:
            call["negative_prompt"] = [j.negative_prompt for j in chunk]
        refiner = self.model.refiner
        stages = 2 if refiner is not None else 1
        with torch.inference_mode():
            if refiner is None:
                pixels = self.model.pipe(**call, output_type="np",
                                         callback_on_step_end=self._on_step(chunk, final, 0, 1)).images
            else:
                frac = self.args.refiner.high_noise_frac
                latents = self.model.pipe(**call, output_type="latent", denoising_end=frac,
                                          callback_on_step_end=self._on_step(chunk, final, 0, stages)).images
                refine = {k: v for k, v in call.items() if k not in ("width", "height")}
                pixels = refiner(**refine, image=latents, denoising_start=frac, output_type="np",
                                 callback_on_step_end=self._on_step(chunk, final, 1, stages)).images
        out = []
        for position, job in enumerate(chunk):
            image = pixels[position]
            if images.failed_decode(image):
                image = self._redecode(final["latents"][position:position + 1], job)
            out.append((job, image, (time.perf_counter() - t0) / len(chunk)))
        self.done += len(chunk)
        return out

    def _redecode(self, latents, job: Job):
        decoder = self.model.refiner or self.model.pipe
        image = pipeline.decode_fp32(decoder, latents)[0]
        if images.failed_decode(image):
            from workers.runtime import InternalError

            raise InternalError(f"image {job.index} ({job.name!r}) decoded to NaN/black even with the VAE in float32: "
                                "the weights or the latents are broken; try dtype float32 or another checkpoint")
        self.redecoded[job.index] = True
        self.ctx.warn(f"image {job.index} ({job.name!r}) decoded to NaN/black in {self.model.dtype}; decoded again "
                      "with the VAE in float32 (use an fp16-fixed VAE, e.g. madebyollin/sdxl-vae-fp16-fix, to avoid it)")
        return image

    def _on_step(self, chunk: list[Job], final: dict[str, Any], stage: int, stages: int):
        def callback(pipe, step: int, timestep, kwargs: dict[str, Any]) -> dict[str, Any]:
            final["latents"] = kwargs.get("latents")
            steps = max(1, getattr(pipe, "num_timesteps", 0) or self.args.steps)
            within = (stage + (step + 1) / steps) / stages
            self.ctx.progress(0.02 + 0.96 * (self.done + within * len(chunk)) / self.total, "denoising",
                              item=chunk[0].index, items=len(chunk), step=step + 1, steps=steps, stage=stage)
            return kwargs

        return callback
