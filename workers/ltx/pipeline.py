"""Loading LTX-Video pipelines and running one clip. torch and diffusers are imported in here only.

A loaded model (`LtxModel`) is what the warm cache keeps: the text-to-video pipeline and an image-to-video
pipeline made from it with `from_pipe`, so both share one transformer, VAE and T5 (one load, one copy in memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.runtime import ModelUnavailable
from workers.runtime.models import diffusers_progress_bars_off, resolve_diffusers_dir

from .contract import Args


@dataclass
class LtxModel:
    text_to_video: Any  # LTXPipeline
    image_to_video: Any  # LTXImageToVideoPipeline sharing every component with text_to_video
    device: str
    dtype: str

    def pipes(self) -> tuple[Any, Any]:
        return self.text_to_video, self.image_to_video


def model_dir(args: Args) -> Path:
    """The checkpoint directory, or ModelUnavailable saying how to get it (no torch needed)."""
    return resolve_diffusers_dir(args.model, allow_download=args.allow_download, field="model",
                                 checkpoint="LTX-Video checkpoint (Lightricks/LTX-Video)")


def load(args: Args, device: str, dtype_name: str, directory: Path) -> LtxModel:
    import torch
    from diffusers import LTXImageToVideoPipeline, LTXPipeline

    diffusers_progress_bars_off()

    try:
        t2v = LTXPipeline.from_pretrained(str(directory), dtype=getattr(torch, dtype_name), use_safetensors=True,
                                          local_files_only=not args.allow_download)
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"cannot load {args.model!r} from {directory}: the directory is incomplete or not an "
                               f"LTX-Video checkpoint in safetensors format ({str(exc).splitlines()[0][:300]})",
                               details={"model": args.model, "path": str(directory)}) from None
    i2v = LTXImageToVideoPipeline.from_pipe(t2v)  # same module objects: no second load, no second copy
    model = LtxModel(text_to_video=t2v, image_to_video=i2v, device=device, dtype=dtype_name)
    if args.offload == "none":
        t2v.to(device)
    else:
        offload(model, args.offload)
    for pipe in model.pipes():
        pipe.set_progress_bar_config(disable=True)
    return model


def offload(model: LtxModel, mode: str) -> None:
    index = int(model.device.split(":", 1)[1]) if ":" in model.device else 0
    for pipe in model.pipes():
        if mode == "model":
            pipe.enable_model_cpu_offload(gpu_id=index)
        else:
            pipe.enable_sequential_cpu_offload(gpu_id=index)


def set_vae_tiling(model: LtxModel, on: bool) -> None:
    vae = model.text_to_video.vae  # shared by both pipelines
    if on:
        vae.enable_tiling()
    else:
        vae.disable_tiling()


class FirstFrameNoise:
    """`image_cond_noise_scale` for LTXImageToVideoPipeline (which lacks it; LTXConditionPipeline has it): after
    each step, the first latent frame becomes the clean image latents plus noise scaled by scale * t_next^2, as
    LTXConditionPipeline does before each step; after the last step it is clean again."""

    def __init__(self, pipe, scale: float, seed: int, width: int, height: int):
        self.pipe, self.scale, self.seed = pipe, scale, seed
        ratio = pipe.vae_spatial_compression_ratio * pipe.transformer_spatial_patch_size
        self.tokens = (height // ratio) * (width // ratio)  # packed (B, F*H*W, C): frame 0 comes first
        self.clean = None
        self.generator = None

    def __call__(self, step: int, latents):
        import torch

        if self.scale <= 0:
            return latents
        if self.clean is None:
            self.clean = latents[:, :self.tokens].clone()  # the i2v pipeline never changes frame 0: still clean
            self.generator = torch.Generator("cpu").manual_seed(self.seed + 1)
        timesteps = self.pipe.scheduler.timesteps
        latents = latents.clone()
        if step + 1 >= len(timesteps):
            latents[:, :self.tokens] = self.clean
            return latents
        noise = torch.randn(self.clean.shape, generator=self.generator, dtype=torch.float32).to(self.clean)
        t_next = float(timesteps[step + 1]) / 1000.0
        latents[:, :self.tokens] = self.clean + self.scale * noise * t_next**2
        return latents
