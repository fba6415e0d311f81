"""Contract pieces shared by the model workers (sdxl, ltx, vision; whisper for the device): the checkpoint and
device fields, precision choices, the size rules, prompt text and seeds. Pure pydantic and JSON Schema, like the rest of the contract."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import ERROR_MESSAGE_KEY, TRIMMED_TEXT_PATTERN, exact, rule

Dtype = Literal["auto", "float32", "float16", "bfloat16"]
Offload = Literal["none", "model", "sequential"]
Fit = Literal["cover", "contain", "stretch"]
DEVICE_PATTERN = exact(r"auto|cpu|cuda(?::[0-9]{1,2})?")
DEVICE_MESSAGE = "must be 'auto', 'cpu', 'cuda' or 'cuda:N'"


def device_field(description: str = "`auto`, `cpu`, `cuda`, `cuda:N`."):
    """The `device` arg every model worker takes (default `auto`), with its pattern and message in the schema."""
    return Field(default="auto", pattern=DEVICE_PATTERN, description=description,
                 json_schema_extra={ERROR_MESSAGE_KEY: DEVICE_MESSAGE})


def checkpoint_field(description: str):
    """A required `model`: a local directory or a cached hub id; no default, so the checkpoint is chosen on purpose."""
    return Field(pattern=TRIMMED_TEXT_PATTERN, description=description,
                 json_schema_extra={ERROR_MESSAGE_KEY: "must be a model directory or hub id without control "
                                    "characters or leading/trailing spaces"})
#: Contains something other than whitespace (search semantics, the same in Python and ECMA-262).
NOT_BLANK = r"[^ \t\n\r\f\v]"
MAX_SEED = 2**32 - 1

_NOT_WITH_ASPECT = {"type": "null", ERROR_MESSAGE_KEY: "give either `aspect` or `width`/`height`, not both"}
_OFFLOAD_ON_CPU = "offload needs an accelerator; use 'none' on device 'cpu'"

#: `aspect` or `width`/`height` (not both), width and height together, no offload on device `cpu`.
SIZE_AND_OFFLOAD_RULES: tuple[dict, ...] = (
    rule({"aspect": {"type": "string"}}, {"width": _NOT_WITH_ASPECT, "height": _NOT_WITH_ASPECT}),
    rule({"width": {"type": "integer"}}, {"height": {"type": "integer"}}, require=["height"],
         message="set `height` together with `width`"),
    rule({"height": {"type": "integer"}}, {"width": {"type": "integer"}}, require=["width"],
         message="set `width` together with `height`"),
    rule({"device": {"const": "cpu"}}, {"offload": {"const": "none", ERROR_MESSAGE_KEY: _OFFLOAD_ON_CPU}}),
)


def check_size_and_offload(args) -> None:
    """The model-side twin of SIZE_AND_OFFLOAD_RULES (for Python callers that build args directly)."""
    if args.aspect is not None and (args.width is not None or args.height is not None):
        raise ValueError("give either `aspect` or `width`/`height`, not both")
    if (args.width is None) != (args.height is None):
        raise ValueError("set `width` and `height` together")
    if args.device == "cpu" and args.offload != "none":
        raise ValueError(_OFFLOAD_ON_CPU)
