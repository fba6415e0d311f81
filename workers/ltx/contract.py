"""Args and result of the LTX-Video clip worker. Pure pydantic: importable without torch or diffusers.

Every rule is in the generated schema (a host gets the worker's verdict); what needs the file system or the
machine (the image decodes, a GPU exists) is listed in `Args`' description and in docs/ltx.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workers.contract import ARGS_CONFIG, ERROR_MESSAGE_KEY, ModelArgs, file_name_field, rule, schema_rules
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

#: Aspect ratios -> generation size, multiples of 32 inside LTX's good range (short side <= 720, long <= 1280).
#: 9:16 and 16:9 are LTX-Video 0.9.6's own default size (1216x704).
ASPECT_SIZES: dict[str, tuple[int, int]] = {
    "9:16": (704, 1216), "16:9": (1216, 704), "1:1": (704, 704), "4:5": (704, 864), "5:4": (864, 704),
    "2:3": (704, 1056), "3:2": (1056, 704), "3:4": (704, 928), "4:3": (928, 704),
}
#: Without width/height or aspect: a vertical clip.
DEFAULT_ASPECT = "9:16"
Aspect = Literal[tuple(ASPECT_SIZES)]  # type: ignore[valid-type]
Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"]
#: Generation side bounds (pixels), multiples of 32 as LTX requires; the tiny test model runs at 32.
MIN_SIDE, MAX_SIDE = 32, 1280
#: Hard bound on frames; LTX is best below 257 (8 * 32 + 1), the worker warns above it.
MAX_FRAMES = 1025
FIT_HELP = ("`cover`: scale to fill, centre-crop the overflow (default); `contain`: scale to fit, pad with black; "
            "`stretch`: ignore the aspect ratio.")


def _side(description: str):
    return Field(default=None, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=32, description=description)


class DeliverySize(BaseModel):
    """Resize every frame to this size (e.g. 1080x1920) with Lanczos; even sides, as H.264 yuv420p needs."""

    model_config = ARGS_CONFIG

    width: int = Field(ge=16, le=4096, multiple_of=2)
    height: int = Field(ge=16, le=4096, multiple_of=2)
    fit: Fit = Field(default="cover", description=FIT_HELP)


_NOT_WITH_FRAMES = {"type": "null", ERROR_MESSAGE_KEY: "give either `num_frames` or `duration_s`, not both"}
_SIZE_RULES, _OFFLOAD_RULE = SIZE_AND_OFFLOAD_RULES[:3], SIZE_AND_OFFLOAD_RULES[3]
_RULES = schema_rules(*_SIZE_RULES, rule({"num_frames": {"type": "integer"}}, {"duration_s": _NOT_WITH_FRAMES}),
                      _OFFLOAD_RULE)


class Args(ModelArgs):
    """Make one video clip with LTX-Video (diffusers): from text alone, or from a first-frame image.

    Checked by the worker, beyond this schema: `image_path` exists, is a readable file under the allowed roots
    and decodes as an image that converts to RGB; `output_dir` is writable; `offload` other than `none` needs a
    CUDA device (also with `device: auto`); `cuda:N` must exist. The frame count is snapped to 8k+1 (reported).
    """

    model_config = ConfigDict(json_schema_extra=_RULES)

    prompt: str = Field(pattern=NOT_BLANK, max_length=4000, description="What the clip shows (LTX likes long, "
                        "chronological, single-paragraph prompts).",
                        json_schema_extra={ERROR_MESSAGE_KEY: "must contain some text"})
    negative_prompt: str | None = Field(default=None, max_length=4000, description="What to avoid.")
    image_path: str | None = Field(default=None, min_length=1, description="First frame: present -> image-to-video "
                                   "(LTXImageToVideoPipeline), absent -> text-to-video (LTXPipeline).")
    fit: Fit = Field(default="cover", description="How `image_path` is fitted to the generation size. " + FIT_HELP)
    model: str = checkpoint_field(
        "A local diffusers LTX-Video directory or a hub id in the local cache (`Lightricks/LTX-Video`). "
        "No default: choose the checkpoint on purpose.")
    width: int | None = _side("Frame width the model generates, a multiple of 32; with `height`.")
    height: int | None = _side("Frame height, a multiple of 32; with `width`.")
    aspect: Aspect | None = Field(default=None, description="Instead of width/height: a size inside LTX's good range "
                                  "(`9:16` -> 704x1216). Default when neither is given: `9:16`.")
    num_frames: int | None = Field(default=None, ge=1, le=MAX_FRAMES,
                                   description="Frames to generate; snapped to the nearest 8k+1 (reported). "
                                   "Default: 97 (about 4 s at 24 fps).")
    duration_s: float | None = Field(default=None, gt=0, le=60,
                                     description="Instead of num_frames: duration_s x fps frames, snapped to 8k+1.")
    fps: int = Field(default=24, ge=1, le=60, description="Frame rate given to the model (`frame_rate`) and the file.")
    steps: int = Field(default=40, ge=1, le=200, description="Denoising steps (distilled checkpoints: 4-8).")
    guidance_scale: float = Field(default=3.0, ge=0.0, le=20.0,
                                  description="Classifier-free guidance; 1.0 for guidance-distilled checkpoints.")
    decode_timestep: float = Field(default=0.0, ge=0.0, le=1.0,
                                   description="VAE decode timestep (timestep-aware VAEs, 0.9.1+: 0.05).")
    decode_noise_scale: float | None = Field(default=None, ge=0.0, le=1.0,
                                             description="Noise mixed in before decoding; default: decode_timestep.")
    image_cond_noise_scale: float = Field(default=0.0, ge=0.0, le=1.0,
                                          description="Image-to-video: noise on the first-frame latents during "
                                          "denoising, scaled by t^2 (0.9.1+: 0.025). Ignored for text-to-video.")
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description="Seed; drawn (and reported) when absent.")
    output_size: DeliverySize | None = Field(default=None, description="Resize every frame for delivery.")
    crf: int = Field(default=18, ge=0, le=51, description="x264 constant rate factor (lower: better, bigger).")
    preset: Preset = Field(default="medium", description="x264 speed/size preset.")
    device: str = device_field()
    dtype: Dtype = Field(default="auto", description="`auto`: bfloat16 on CUDA, float32 on CPU.")
    offload: Offload = Field(default="none", description="`model`: one sub-model on the GPU at a time; `sequential`: "
                             "layer by layer (slow, least memory). Needs an accelerator.")
    vae_tiling: bool = Field(default=False, description="Decode in tiles (large clips, less memory).")
    allow_degrade: bool = Field(default=False, description="Let the out-of-memory ladder halve the frame count as "
                                "its last rung (reported in `warnings`).")
    name: str = file_name_field(default="clip", max_length=120,
                                description="Output file stem: `<name>.mp4` and `<name>_poster.png`.")

    @model_validator(mode="after")
    def _combinations(self) -> Args:
        if self.num_frames is not None and self.duration_s is not None:
            raise ValueError("give either `num_frames` or `duration_s`, not both")
        check_size_and_offload(self)
        return self


class Result(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    path: str = Field(description="Absolute path of the mp4 (H.264, yuv420p, +faststart) after the job.")
    poster_path: str = Field(description="Absolute path of the first frame as PNG, for previews.")
    mode: Literal["text_to_video", "image_to_video"]
    frames: int = Field(ge=1, description="Frames in the file (8k+1, or fewer after the `fewer_frames` rung).")
    frames_requested: int = Field(ge=1, description="Frames asked for (num_frames, or duration_s x fps).")
    fps: int
    duration_s: float = Field(description="frames / fps.")
    width: int = Field(description="Width of the file (after `output_size`).")
    height: int
    generated_width: int = Field(description="Width the model generated at.")
    generated_height: int
    seed: int = Field(ge=0)
    seed_drawn: bool = Field(description="True when the seed was not given and the worker drew it.")
    prompt: str
    negative_prompt: str | None
    model: str
    device: str
    dtype: str
    steps: int
    guidance_scale: float
    codec: str = Field(description="Always `h264`.")
    pix_fmt: str = Field(description="Always `yuv420p`.")
    memory_rung: str = Field(description="`none`, or the out-of-memory ladder rung that made the job fit.")
