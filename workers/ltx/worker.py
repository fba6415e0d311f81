"""The LTX-Video clip worker: one clip per request, from text or from a first-frame image, warm, memory-aware.

Recipe: check_inputs (the image decodes, offload needs a GPU; no torch yet) -> load (cached per model, device,
dtype, offload; text-to-video and image-to-video share components) -> per request: size, frames snapped to 8k+1,
seed, VAE tiling -> generate through the OOM ladder -> fit frames to the delivery size -> H.264 mp4 + poster.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from workers.runtime import FieldErrors, InvalidInput, JobContext, Worker, input_file
from workers.runtime.devices import dtype_name, offload_problem, torch_device
from workers.runtime.imaging import fit, image_problem, load_rgb
from workers.runtime.oom_ladder import MemoryLadder

from . import __version__, pipeline, video
from .contract import MAX_SEED, Args, Result
from .sizes import RECOMMENDED_MAX_FRAMES, fewer_frames, generation_size, requested_frames, snap_frames

#: Out-of-memory rungs, cheapest first (docs/ltx.md); the offload rungs are skipped without an accelerator.
LADDER = ("vae_tiling", "model_offload", "sequential_offload")
#: Only with `allow_degrade`: each halves the frame count (97 -> 49 -> 25 -> 9).
DEGRADE_RUNGS = ("fewer_frames",) * 3


@dataclass
class Plan:
    """What this request generates; `frames` shrinks when the `fewer_frames` rung is applied."""

    width: int
    height: int
    frames: int
    frames_requested: int
    seed: int
    seed_drawn: bool


def make_plan(args: Args, ctx: JobContext) -> Plan:
    width, height = generation_size(args)
    requested = requested_frames(args)
    frames = snap_frames(requested)
    if frames != requested:
        source = "num_frames" if args.num_frames is not None else f"duration_s x fps ({args.duration_s} x {args.fps})"
        ctx.warn(f"{source} asks for {requested} frames; LTX needs 8k+1 frames, so {frames} are generated "
                 f"({frames / args.fps:.3f} s at {args.fps} fps)")
    if frames > RECOMMENDED_MAX_FRAMES:
        ctx.warn(f"{frames} frames is above the {RECOMMENDED_MAX_FRAMES} LTX-Video was trained for: expect drift")
    seed_drawn = args.seed is None
    seed = secrets.randbelow(MAX_SEED + 1) if seed_drawn else args.seed
    return Plan(width, height, frames, requested, seed, seed_drawn)


class LtxWorker(Worker[Args, Result]):
    name = "ltx"
    version = __version__
    Args = Args
    Result = Result
    extra = "ltx"
    requires = ("torch", "diffusers", "transformers", "PIL", "av")

    # --- cheap checks, no torch ----------------------------------------------------------------------------
    def check_inputs(self, args: Args) -> None:
        problems = FieldErrors()
        if args.image_path is not None:
            resolved = problems.attempt(input_file, args.image_path, "image_path")
            reason = image_problem(resolved) if resolved is not None else None
            if reason:
                problems.add("$.image_path", f"image_path {args.image_path!r} {reason}", "bad_file")
        offload = offload_problem(args.offload)
        if offload:
            problems.add("$.offload", offload, "offload")
        problems.raise_if_any(f"invalid input for worker '{self.name}'")

    model_key_fields = ("model", "device", "dtype", "offload")

    def model_key(self, args: Args) -> str:
        return f"{args.model}|{args.device}|{args.dtype}|offload={args.offload}"

    # --- load ------------------------------------------------------------------------------------------------
    def load(self, args: Args, ctx: JobContext) -> pipeline.LtxModel:
        directory = pipeline.model_dir(args)  # before torch: a missing model fails fast
        device = torch_device(args.device)
        offload = offload_problem(args.offload, device)
        if offload:
            raise InvalidInput.for_field("offload", offload, type_="offload")
        dtype = dtype_name(args.dtype, device, cuda_default="bfloat16")  # LTX's transformer is trained in bf16; fp16 overflows more easily
        ctx.progress(0.0, "loading model", model=args.model, device=device, dtype=dtype)
        return pipeline.load(args, device, dtype, directory)

    # --- run -------------------------------------------------------------------------------------------------
    def run(self, model: pipeline.LtxModel, args: Args, ctx: JobContext) -> Result:
        plan = make_plan(args, ctx)
        first_frame = _first_frame(args, plan)
        pipeline.set_vae_tiling(model, args.vae_tiling)  # per request: a previous request's setting never leaks
        rungs = LADDER + (DEGRADE_RUNGS if args.allow_degrade else ())
        ladder = MemoryLadder(rungs, accelerator=model.device.startswith("cuda"),
                              already_on=frozenset({"vae_tiling"} if args.vae_tiling else ()),
                              apply=lambda rung: _apply_rung(model, plan, rung, ctx), warn=ctx.warn)
        [frames] = ladder.run([plan], lambda _: [_generate(model, args, plan, first_frame, ctx)])
        ctx.progress(0.92, "encoding", frames=len(frames))
        images = video.to_images(frames, args.output_size)
        file_name, poster_name = f"{args.name}.mp4", f"{args.name}_poster.png"
        video.encode(images, ctx.output_path(file_name, video.MEDIA_TYPE), args.fps, args.crf, args.preset)
        video.save_poster(images[0], ctx.output_path(poster_name, video.POSTER_MEDIA_TYPE))
        width, height = images[0].size
        ctx.extra_metrics.update(frames=len(images), frames_requested=plan.frames_requested, fps=args.fps,
                                 memory_rung=ladder.rung, width=width, height=height,
                                 mode="image_to_video" if first_frame is not None else "text_to_video")
        ctx.progress(1.0, "done", frames=len(images))
        return Result(path=str(ctx.final_path(file_name)), poster_path=str(ctx.final_path(poster_name)),
                      mode=ctx.extra_metrics["mode"], frames=len(images), frames_requested=plan.frames_requested,
                      fps=args.fps, duration_s=round(len(images) / args.fps, 4), width=width, height=height,
                      generated_width=plan.width, generated_height=plan.height, seed=plan.seed,
                      seed_drawn=plan.seed_drawn, prompt=args.prompt, negative_prompt=args.negative_prompt,
                      model=args.model, device=model.device, dtype=model.dtype, steps=args.steps,
                      guidance_scale=args.guidance_scale, codec=video.CODEC, pix_fmt=video.PIX_FMT,
                      memory_rung=ladder.rung)


def _first_frame(args: Args, plan: Plan):
    """The conditioning image, RGB, fitted to the generation size with `args.fit` (cover-crop by default)."""
    if args.image_path is None:
        return None
    return fit(load_rgb(args.image_path), SimpleNamespace(width=plan.width, height=plan.height), args.fit)


def _apply_rung(model: pipeline.LtxModel, plan: Plan, rung: str, ctx: JobContext) -> None:
    if rung == "vae_tiling":
        pipeline.set_vae_tiling(model, True)
    elif rung in ("model_offload", "sequential_offload"):
        pipeline.offload(model, rung.split("_")[0])  # stays on for the warm pipelines too
    elif rung == "fewer_frames":
        before, plan.frames = plan.frames, fewer_frames(plan.frames)
        ctx.warn(f"allow_degrade: {before} frames did not fit in memory; generating {plan.frames}")


def _generate(model: pipeline.LtxModel, args: Args, plan: Plan, first_frame, ctx: JobContext) -> Any:
    """One pipeline call: float frames (F, H, W, 3) in [0, 1]; a progress event per denoising step."""
    import torch

    pipe = model.text_to_video if first_frame is None else model.image_to_video
    noise = pipeline.FirstFrameNoise(pipe, args.image_cond_noise_scale if first_frame is not None else 0.0,
                                     plan.seed, plan.width, plan.height)

    def on_step(pipe, step: int, timestep, kwargs: dict[str, Any]) -> dict[str, Any]:
        steps = max(1, getattr(pipe, "num_timesteps", 0) or args.steps)
        ctx.progress(0.02 + 0.88 * (step + 1) / steps, "denoising", step=step + 1, steps=steps)
        kwargs["latents"] = noise(step, kwargs["latents"])
        return kwargs

    call = {"prompt": args.prompt, "negative_prompt": args.negative_prompt, "width": plan.width,
            "height": plan.height, "num_frames": plan.frames, "frame_rate": args.fps,
            "num_inference_steps": args.steps, "guidance_scale": args.guidance_scale,
            "decode_timestep": args.decode_timestep, "decode_noise_scale": args.decode_noise_scale,
            "generator": torch.Generator("cpu").manual_seed(plan.seed),  # CPU: the same noise on every device
            "output_type": "np", "callback_on_step_end": on_step}
    if first_frame is not None:
        call["image"] = first_frame
    with torch.inference_mode():
        return pipe(**call).frames[0]
