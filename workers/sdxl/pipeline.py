"""Loading SDXL pipelines and setting them up per request. torch and diffusers are imported in here only.

A loaded model (`SdxlModel`) is what the warm cache keeps: the base pipeline, the optional refiner sharing
its second text encoder and VAE, and the scheduler config the checkpoint shipped with (each request builds its
own scheduler from it, so one request's sampler never leaks into the next).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.runtime import InvalidInput, ModelUnavailable, is_out_of_memory
from workers.runtime.events import emit
from workers.runtime.models import diffusers_progress_bars_off, resolve_diffusers_dir

from .contract import Args, Lora

#: Scheduler name -> (diffusers class, extra config).
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"euler_at_final": True}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True, "euler_at_final": True}),
    "ddim": ("DDIMScheduler", {}),
}


@dataclass
class SdxlModel:
    pipe: Any  # StableDiffusionXLPipeline
    refiner: Any | None  # StableDiffusionXLImg2ImgPipeline
    device: str
    dtype: str
    schedulers: dict[str, tuple[type, dict[str, Any]]]  # "base"/"refiner" -> the checkpoint's own (class, config)
    native_side: int
    offload: str = "none"  # what the loaded pipelines do now: the ladder may have turned offload on for good


def model_dirs(args: Args) -> tuple[Path, Path | None]:
    """The base and refiner directories, or ModelUnavailable saying how to get them (no torch needed)."""
    def find(value: str, field: str) -> Path:
        return resolve_diffusers_dir(value, allow_download=args.allow_download, field=field,
                                     checkpoint="SDXL checkpoint")

    return find(args.model, "model"), find(args.refiner.model, "refiner.model") if args.refiner else None


def load(args: Args, device: str, dtype_name: str, base_dir: Path, refiner_dir: Path | None) -> SdxlModel:
    import torch
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    diffusers_progress_bars_off()

    dtype = getattr(torch, dtype_name)
    common = {"dtype": dtype, "variant": args.variant, "use_safetensors": True,
              "local_files_only": not args.allow_download}
    pipe = _from_pretrained(StableDiffusionXLPipeline, base_dir, args.model, add_watermarker=False, **common)
    refiner = None
    if args.refiner is not None and refiner_dir is not None:
        refiner = _from_pretrained(StableDiffusionXLImg2ImgPipeline, refiner_dir, args.refiner.model,
                                   text_encoder_2=pipe.text_encoder_2, vae=pipe.vae, add_watermarker=False, **common)
    if args.offload == "none":
        pipe.to(device)
        if refiner is not None:
            refiner.to(device)
    else:
        for p in filter(None, (pipe, refiner)):
            _offload(p, args.offload, device)
    for p in filter(None, (pipe, refiner)):
        p.set_progress_bar_config(disable=True)
    native = int(pipe.unet.config.sample_size * pipe.vae_scale_factor)
    schedulers = {role: (type(p.scheduler), dict(p.scheduler.config))
                  for role, p in (("base", pipe), ("refiner", refiner)) if p is not None}
    return SdxlModel(pipe=pipe, refiner=refiner, device=device, dtype=dtype_name, schedulers=schedulers,
                     native_side=native, offload=args.offload)


def _from_pretrained(cls, directory: Path, name: str, **kwargs):
    try:
        return cls.from_pretrained(str(directory), **kwargs)
    except (OSError, ValueError) as exc:
        if "variant" in str(exc):
            how = f"the checkpoint has no `{kwargs.get('variant')}` variant files: drop `variant` or fetch them"
        else:
            how = "the directory is incomplete or not an SDXL checkpoint in safetensors format"
        raise ModelUnavailable(f"cannot load {name!r} from {directory}: {how} ({str(exc).splitlines()[0][:300]})",
                               details={"model": name, "path": str(directory)}) from None


def _offload(pipe, mode: str, device: str) -> None:
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if mode == "model":
        pipe.enable_model_cpu_offload(gpu_id=index)
    else:
        pipe.enable_sequential_cpu_offload(gpu_id=index)


def apply_rung(model: SdxlModel, rung: str) -> None:
    """One memory saving from the OOM ladder, on the loaded pipelines (kept for later requests too)."""
    for pipe in filter(None, (model.pipe, model.refiner)):
        if rung == "vae_tiling":
            pipe.vae.enable_tiling()
        elif rung in ("model_offload", "sequential_offload"):
            _offload(pipe, rung.split("_")[0], model.device)
            model.offload = rung.split("_")[0]


def prepare(model: SdxlModel, args: Args) -> str:
    """Per-request settings: scheduler, VAE tiling, attention slicing. Returns the scheduler class name."""
    import diffusers

    for role, pipe in (("base", model.pipe), ("refiner", model.refiner)):
        if pipe is None:
            continue
        own_class, config = model.schedulers[role]  # always from the checkpoint's own: nothing carries over
        if args.scheduler is None:
            pipe.scheduler = own_class.from_config(config)
        else:
            class_name, extra = SCHEDULERS[args.scheduler]
            pipe.scheduler = getattr(diffusers, class_name).from_config(config, **extra)
        if args.vae_tiling:
            pipe.vae.enable_tiling()
        else:
            pipe.vae.disable_tiling()
        if args.attention_slicing:
            pipe.enable_attention_slicing()
        else:
            pipe.disable_attention_slicing()
    return type(model.pipe.scheduler).__name__


@contextmanager
def loras(model: SdxlModel, items: list[Lora]) -> Iterator[None]:
    """LoRA adapters on the base pipeline for one request; always unloaded, so a warm worker never leaks one."""
    if not items:
        yield
        return
    names = [f"request_lora_{i}" for i in range(len(items))]
    try:
        for name, lora in zip(names, items, strict=True):
            path = Path(lora.path).resolve()
            try:
                model.pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
            except Exception as exc:  # noqa: BLE001 - wrong keys or shapes (peft raises RuntimeError): the user's file
                if is_out_of_memory(exc):
                    raise
                first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                raise InvalidInput.for_field(f"$.loras[{names.index(name)}].path", f"LoRA {lora.path!r} does not fit "
                                             f"this model: {first_line}", type_="bad_file",
                                             detail="not a LoRA for this model") from None
        model.pipe.set_adapters(names, adapter_weights=[lora.scale for lora in items])
        yield
    finally:
        try:
            model.pipe.unload_lora_weights()
        except Exception as exc:  # noqa: BLE001 - never hide the job's own error; the next request reloads cleanly
            emit("log", level="warning", message=f"unloading LoRAs failed: {exc}")


def decode_fp32(pipe, latents) -> Any:
    """Decode final latents with the VAE in float32 (the fix for fp16 NaN/black images); float HWC arrays."""
    import torch

    vae = pipe.vae
    original = vae.dtype
    vae.to(torch.float32)
    try:
        latents = latents.to(torch.float32)
        config = vae.config
        if getattr(config, "latents_mean", None) is not None and getattr(config, "latents_std", None) is not None:
            mean = torch.tensor(config.latents_mean).view(1, 4, 1, 1).to(latents.device, latents.dtype)
            std = torch.tensor(config.latents_std).view(1, 4, 1, 1).to(latents.device, latents.dtype)
            latents = latents * std / config.scaling_factor + mean
        else:
            latents = latents / config.scaling_factor
        with torch.no_grad():
            image = vae.decode(latents.to(next(vae.parameters()).device), return_dict=False)[0]
        return pipe.image_processor.postprocess(image, output_type="np")
    finally:
        vae.to(original)
