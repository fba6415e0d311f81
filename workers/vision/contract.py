"""Args and result of the LLaVA scene-check worker. Pure pydantic: importable without torch or transformers.

Every rule is in the generated schema (a host gets the worker's verdict); what needs the file system (each image
exists and decodes) is listed in `Args`' description and in docs/vision.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workers.contract import ARGS_CONFIG, ERROR_MESSAGE_KEY, ModelArgs, file_name_field, schema_rules
from workers.contract.generation import NOT_BLANK, Dtype, checkpoint_field, device_field

Task = Literal["validate", "caption", "ask"]
#: `{expected}` is replaced by the item's expected scene. The suffix is the one LLaVA-1.5 was tuned with for
#: short answers, so the next token is "Yes"/"No" rather than a preamble (docs/vision.md).
DEFAULT_VALIDATE_TEMPLATE = "Does this image show {expected}? Answer the question using a single word or phrase."
DEFAULT_CAPTION_PROMPT = "Describe this image in one sentence."
MAX_TEXT = 2000

_PATH_FIELD = dict(min_length=1, max_length=4096)
_TEXT = dict(pattern=NOT_BLANK, max_length=MAX_TEXT, json_schema_extra={ERROR_MESSAGE_KEY: "must contain some text"})


class ImageItem(BaseModel):
    """One image to check."""

    model_config = ARGS_CONFIG

    path: str = Field(**_PATH_FIELD, description="The image file (any format Pillow decodes).")
    expected: str | None = Field(default=None, **_TEXT,
                                 description="`validate`: the scene the image should show, e.g. `a red fox in snow`; "
                                 "the yes/no question is built from it with `validate_template`.")
    question: str | None = Field(default=None, **_TEXT,
                                 description="`ask`: this image's question (default: the shared `question`). "
                                 "`validate`: a yes/no question asked verbatim instead of the template.")


#: A plain path, the shorthand for `{"path": ...}`.
ImagePath = Annotated[str, Field(**_PATH_FIELD)]

_NEEDS_EXPECTED = ("`validate` needs `expected` (or a yes/no `question`) on every image; a plain path has neither")
_NEEDS_QUESTION = "`ask` needs a `question`: on every image, or a shared one in `question`"


def _present(field: str) -> dict:
    """`field` is given and not null (null means absent, as in the pydantic model)."""
    return {"required": [field], "properties": {field: {"type": "string"}}}


# `task` absent means `validate` (its default): without `required`, the `if` holds for an absent task too.
_VALIDATE_RULE = {
    "if": {"properties": {"task": {"const": "validate"}}},
    "then": {"properties": {"images": {"items": {
        "type": "object", "anyOf": [_present("expected"), _present("question")],
        ERROR_MESSAGE_KEY: _NEEDS_EXPECTED}}}},
}
_ASK_RULE = {
    "if": {"properties": {"task": {"const": "ask"}, "question": {"type": "null"}}, "required": ["task"]},
    "then": {"properties": {"images": {"items": {"type": "object", **_present("question"),
                                                 ERROR_MESSAGE_KEY: _NEEDS_QUESTION}}}},
}


class Args(ModelArgs):
    """Check images with a LLaVA-family vision-language model (transformers): does each show its expected scene
    (`validate`, a calibrated score from the yes/no next-token probabilities), a caption (`caption`), or the
    answer to a question (`ask`).

    Checked by the worker, beyond this schema: every image exists, is a readable file under the allowed roots and
    decodes as an image; `output_dir` is writable; `cuda:N` must exist; the model directory is a LLaVA-family
    checkpoint (`llava`, `llava_next`, `llava_onevision`) unless `trust_remote_code` is set.
    """

    model_config = ConfigDict(json_schema_extra={**schema_rules(_VALIDATE_RULE, _ASK_RULE), "examples": [
        {"images": [{"path": "keyframes/shot_01.png", "expected": "a red fox standing in deep snow at sunset"}],
         "model": "llava-hf/llava-1.5-7b-hf", "output_dir": "checks"},
        {"images": ["keyframes/shot_01.png"], "task": "caption", "model": "llava-hf/llava-1.5-7b-hf",
         "output_dir": "captions"},
    ]})

    images: list[ImageItem | ImagePath] = Field(
        min_length=1, max_length=1024,
        description="The images: items `{path, expected?, question?}`, or plain paths.")
    task: Task = Field(default="validate", description="`validate`: score how well each image shows its `expected` "
                       "scene; `caption`: describe each image; `ask`: answer each image's question.")
    model: str = checkpoint_field(
        "A local LLaVA / LLaVA-NeXT / LLaVA-OneVision directory (transformers format) or a hub id in "
        "the local cache (`llava-hf/llava-1.5-7b-hf`). No default: choose the checkpoint on purpose.")
    question: str | None = Field(default=None, **_TEXT, description="`ask`: the question for images without their "
                                 "own `question`.")
    threshold: float = Field(default=0.5, ge=0.0, le=1.0, description="`validate`: `match` is `score >= threshold`.")
    explain: bool = Field(default=False, description="`validate`: also generate a one-sentence `reason` per image.")
    validate_template: str = Field(
        default=DEFAULT_VALIDATE_TEMPLATE, max_length=MAX_TEXT, pattern=r"\{expected\}",  # unanchored: found anywhere
        description="`validate`: the yes/no question; `{expected}` is replaced by the item's `expected`.",
        json_schema_extra={ERROR_MESSAGE_KEY: "must contain the placeholder {expected}"})
    caption_prompt: str = Field(default=DEFAULT_CAPTION_PROMPT, **_TEXT,
                                description="`caption`: the instruction sent with each image.")
    max_new_tokens: int = Field(default=64, ge=1, le=1024,
                                description="Token budget of each generated caption, answer or reason.")
    max_image_side: int = Field(default=1024, ge=16, le=8192,
                                description="Images are downscaled (aspect kept) so the long side is at most this "
                                "many pixels before the processor sees them.")
    batch_size: int = Field(default=4, ge=1, le=64, description="Images per forward pass (left-padded). Never "
                            "changes a score beyond float noise; halved automatically on out-of-memory.")
    device: str = device_field()
    dtype: Dtype = Field(default="auto", description="`auto`: float16 on CUDA, float32 on CPU.")
    report: str | None = file_name_field(default=None, max_length=120,
                                         description="Also write the result as a JSON report with this file name "
                                         "(e.g. `scene_checks.json`) in `output_dir`.")

    @model_validator(mode="after")
    def _task_needs(self) -> Args:
        items = self.items()
        if self.task == "validate":
            missing = [i for i, item in enumerate(items) if item.expected is None and item.question is None]
            if missing:
                raise ValueError(f"{_NEEDS_EXPECTED} (images {missing[:10]})")
        if self.task == "ask" and self.question is None:
            missing = [i for i, item in enumerate(items) if item.question is None]
            if missing:
                raise ValueError(f"{_NEEDS_QUESTION} (images {missing[:10]})")
        return self

    def items(self) -> list[ImageItem]:
        """Every image as an item (plain paths become items without expected/question)."""
        return [i if isinstance(i, ImageItem) else ImageItem(path=i) for i in self.images]


class ItemResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0, description="0-based position in `images`.")
    path: str = Field(description="The image path as given.")
    width: int = Field(ge=1, description="Width of the image file (before `max_image_side`).")
    height: int = Field(ge=1)
    question: str = Field(description="The exact text sent with the image.")
    expected: str | None = None
    score: float | None = Field(default=None, ge=0.0, le=1.0,
                                description="`validate`: P(yes) / (P(yes) + P(no)) from the next-token logits.")
    match: bool | None = Field(default=None, description="`validate`: `score >= threshold`.")
    answer: str | None = Field(default=None, description="`ask`: the generated answer.")
    caption: str | None = Field(default=None, description="`caption`: the generated description.")
    reason: str | None = Field(default=None, description="`validate` with `explain`: a generated reason.")


class Result(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    task: Task
    items: list[ItemResult]
    threshold: float | None = Field(description="`validate`: the threshold applied; null for other tasks.")
    matched: int | None = Field(description="`validate`: images with `match` true.")
    all_match: bool | None = Field(description="`validate`: every image matched (a pipeline's gate).")
    yes_tokens: list[str] = Field(description="`validate`: the tokens whose probabilities form P(yes).")
    no_tokens: list[str] = Field(description="`validate`: the tokens whose probabilities form P(no).")
    report_path: str | None = Field(description="Absolute path of the JSON report, when `report` was given.")
    model: str
    model_type: str = Field(description="The checkpoint's `model_type` (`llava`, `llava_next`, ...).")
    device: str
    dtype: str
    batch_size: int = Field(description="Images per forward pass at the end (lower after the OOM ladder).")
    memory_rung: str = Field(description="`none`, or `smaller_batch` when out-of-memory lowered the batch size.")
