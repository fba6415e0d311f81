"""Args and result of the SDXL keyframe worker. Pure pydantic: importable without torch or diffusers.

Every rule is in the generated schema (a host gets the worker's verdict); what needs the file system or the
machine is listed in `Args`' description and in docs/sdxl.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workers.contract import ARGS_CONFIG, ERROR_MESSAGE_KEY, ModelArgs, exact, file_name_field, schema_rules
from workers.contract.common import TRIMMED_TEXT_PATTERN
from workers.contract.generation import (
    MAX_SEED,
    NOT_BLANK,
    SIZE_AND_OFFLOAD_RULES,
    Dtype,
    Fit,
    Offload,
    check_size_and_offload,
    checkpoint_field,
    device_field,
)

Scheduler = Literal["euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim"]
#: Aspect ratios, mapped to SDXL's ~1 MP training buckets (W x H at the model's native 1024).
ASPECT_BUCKETS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024), "9:16": (768, 1344), "16:9": (1344, 768), "4:5": (896, 1152), "5:4": (1152, 896),
    "3:4": (896, 1152), "4:3": (1152, 896), "2:3": (832, 1216), "3:2": (1216, 832), "9:21": (640, 1536),
    "21:9": (1536, 640),
}
Aspect = Literal[tuple(ASPECT_BUCKETS)]  # type: ignore[valid-type]
ImageFormat = Literal["png", "webp", "jpeg"]
SAFETENSORS_PATH = exact(r"[^\x00-\x1f]*\.safetensors")
#: Image side bounds (pixels). SDXL itself is best at ~1 MP; the tiny test model at 64.
MIN_SIDE, MAX_SIDE = 16, 4096


def _size_field(description: str):
    return Field(default=None, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8, description=description)


class PromptItem(BaseModel):
    """One keyframe."""

    model_config = ARGS_CONFIG

    prompt: str = Field(pattern=NOT_BLANK, max_length=4000, description="What the image shows.",
                        json_schema_extra={ERROR_MESSAGE_KEY: "must contain some text"})
    negative_prompt: str | None = Field(default=None, max_length=4000,
                                        description="What to avoid; default: the shared `negative_prompt`.")
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED,
                             description="Seed of this image's own generator; drawn (and reported) when absent.")
    name: str | None = file_name_field(
        default=None, max_length=120,
        description="Output file stem (`<name>.png`); default `keyframe_NN` (1-based). Names must be unique.")


#: A plain prompt string, the shorthand for `{"prompt": ...}`.
PromptText = Annotated[str, Field(pattern=NOT_BLANK, max_length=4000,
                                  json_schema_extra={ERROR_MESSAGE_KEY: "must contain some text"})]


class DeliverySize(BaseModel):
    """Resize the generated image to this size (e.g. 1080x1920) with Lanczos."""

    model_config = ARGS_CONFIG

    width: int = Field(ge=MIN_SIDE, le=8192)
    height: int = Field(ge=MIN_SIDE, le=8192)
    fit: Fit = Field(default="cover", description="`cover`: scale to fill, centre-crop the overflow (default); "
                     "`contain`: scale to fit, pad with black; `stretch`: ignore the aspect ratio.")


class Lora(BaseModel):
    model_config = ARGS_CONFIG

    path: str = Field(pattern=SAFETENSORS_PATH, description="A LoRA `.safetensors` file (diffusers/kohya format).",
                      json_schema_extra={ERROR_MESSAGE_KEY: "must be a path to a .safetensors file"})
    scale: float = Field(default=1.0, ge=-4.0, le=4.0, description="Adapter weight.")


class Refiner(BaseModel):
    """SDXL refiner as an ensemble of experts: the base denoises the first `high_noise_frac`, the refiner the rest."""

    model_config = ARGS_CONFIG

    model: str = Field(pattern=TRIMMED_TEXT_PATTERN,
                       description="Refiner directory or cached hub id (`stabilityai/stable-diffusion-xl-refiner-1.0`).")
    high_noise_frac: float = Field(default=0.8, gt=0.0, lt=1.0)


_RULES = schema_rules(*SIZE_AND_OFFLOAD_RULES)


class Args(ModelArgs):
    """Generate one keyframe per prompt with Stable Diffusion XL (diffusers).

    Checked by the worker, beyond this schema: item names (given or default) are unique; every LoRA file exists
    and is a readable safetensors file; `output_dir` is writable; with `STORYBRIDGE_ALLOWED_ROOTS` set, LoRA files
    and `output_dir` lie under an allowed root; `offload` other than `none` needs a CUDA device (also with
    `device: auto`); `cuda:N` must exist.
    """

    model_config = ConfigDict(json_schema_extra=_RULES)

    prompts: list[PromptItem | PromptText] = Field(
        min_length=1, max_length=256,
        description="The keyframes: items `{prompt, negative_prompt?, seed?, name?}`, or plain prompt strings.")
    model: str = checkpoint_field(
        "A local diffusers SDXL directory or a hub id in the local cache "
        "(`stabilityai/stable-diffusion-xl-base-1.0`). No default: choose the checkpoint on purpose.")
    negative_prompt: str | None = Field(default=None, max_length=4000,
                                        description="Negative prompt for items that do not set one.")
    refiner: Refiner | None = None
    steps: int = Field(default=30, ge=1, le=200, description="Denoising steps (per image; the refiner shares them).")
    guidance_scale: float = Field(default=5.0, ge=0.0, le=30.0, description="Classifier-free guidance; <= 1 turns it off.")
    scheduler: Scheduler | None = Field(
        default=None, description="Sampler; default: the checkpoint's own (Euler for SDXL base). `dpmpp_2m_karras` "
        "is DPM++ 2M with Karras sigmas; DPM++ uses `euler_at_final` against artifacts at low step counts.")
    width: int | None = _size_field("Image width, a multiple of 8; with `height`. Default: the model's native size.")
    height: int | None = _size_field("Image height, a multiple of 8; with `width`.")
    aspect: Aspect | None = Field(
        default=None, description="Instead of width/height: SDXL's ~1 MP training bucket for this aspect ratio "
        "(`9:16` -> 768x1344), scaled to the model's native size.")
    output_size: DeliverySize | None = Field(default=None, description="Resize each image for delivery.")
    batch_size: int = Field(default=1, ge=1, le=16,
                            description="Images per pipeline call. Never changes what an image shows (see docs).")
    image_format: ImageFormat = "png"
    quality: int = Field(default=95, ge=1, le=100, description="webp/jpeg quality (png is lossless).")
    device: str = device_field()
    dtype: Dtype = Field(default="auto", description="`auto`: float16 on CUDA, float32 on CPU.")
    variant: str | None = Field(default=None, pattern=exact(r"[A-Za-z0-9_]{1,32}"),
                                description="Weight file variant, e.g. `fp16` (`*.fp16.safetensors`).")
    offload: Offload = Field(default="none", description="`model`: one sub-model on the GPU at a time; `sequential`: "
                             "layer by layer (slow, least memory). Needs an accelerator.")
    vae_tiling: bool = Field(default=False, description="Decode in tiles (large images, less memory).")
    attention_slicing: bool = Field(default=False, description="Compute attention in slices (less memory, slower).")
    loras: list[Lora] = Field(default_factory=list, max_length=8,
                              description="LoRA adapters for this request only (unloaded afterwards).")

    @model_validator(mode="after")
    def _combinations(self) -> Args:
        check_size_and_offload(self)
        return self

    def items(self) -> list[PromptItem]:
        """Every prompt as an item (strings become items with defaults)."""
        return [p if isinstance(p, PromptItem) else PromptItem(prompt=p) for p in self.prompts]


class ImageResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0, description="0-based position in `prompts`.")
    name: str
    path: str = Field(description="Absolute path of the image after the job.")
    prompt: str
    negative_prompt: str | None
    seed: int = Field(ge=0)
    seed_drawn: bool = Field(description="True when the seed was not given and the worker drew it.")
    width: int = Field(description="Width of the file (after `output_size`).")
    height: int
    generated_width: int = Field(description="Width the model generated at.")
    generated_height: int
    seconds: float = Field(ge=0, description="Share of the batch's wall time.")
    fp32_vae_redecode: bool = Field(description="True when the first decode gave NaN/black and fp32 fixed it.")


class Result(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    images: list[ImageResult]
    model: str
    refiner: str | None
    device: str
    dtype: str
    scheduler: str = Field(description="Scheduler class that ran.")
    steps: int
    guidance_scale: float
    batch_size: int = Field(description="Requested images per call.")
    memory_rung: str = Field(description="`none`, or the out-of-memory ladder rung that made the job fit.")
    loras: list[Lora]
