"""Finding and loading a LLaVA-family checkpoint, and the tokens that mean yes and no.

torch and transformers are imported in `load` only; `model_dir` reads `config.json` with the standard library so a
wrong checkpoint fails before any heavy import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.runtime import ModelUnavailable, is_out_of_memory
from workers.runtime.models import resolve_model_dir

from .contract import Args

#: transformers' native classes behind AutoModelForImageTextToText that this worker is tested and documented for.
SUPPORTED_MODEL_TYPES = ("llava", "llava_next", "llava_onevision")
YES_WORDS = ("Yes", "yes", "YES")
NO_WORDS = ("No", "no", "NO")


@dataclass
class AnswerTokens:
    """Token ids whose next-token probabilities are summed into P(yes) and P(no)."""

    yes_ids: list[int]
    no_ids: list[int]
    yes_tokens: list[str] = field(default_factory=list)
    no_tokens: list[str] = field(default_factory=list)
    whole_words: bool = True  # False: first pieces of multi-token words (tokenizers without a "Yes" token)


@dataclass
class VisionModel:
    model: Any  # an AutoModelForImageTextToText instance
    processor: Any
    device: str
    dtype: str
    model_type: str
    _answer_tokens: AnswerTokens | None = None

    def answer_tokens(self) -> AnswerTokens:
        """Found once per loaded model; only `validate` needs them."""
        if self._answer_tokens is None:
            self._answer_tokens = answer_tokens(self.processor.tokenizer)
        return self._answer_tokens


def model_dir(args: Args) -> tuple[Path, str]:
    """The checkpoint directory and its `model_type`, or ModelUnavailable saying what to pass (no torch)."""
    path = resolve_model_dir(args.model, allow_download=args.allow_download, field="model")
    config = path / "config.json"
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type", "")
    except (OSError, ValueError, AttributeError):
        raise ModelUnavailable(f"model {args.model!r} ({path}) has no readable config.json: pass a transformers "
                               "checkpoint directory such as a local copy of llava-hf/llava-1.5-7b-hf",
                               details={"model": args.model}) from None
    if model_type not in SUPPORTED_MODEL_TYPES and not args.trust_remote_code:
        raise ModelUnavailable(
            f"model {args.model!r} is a {model_type or 'unknown'!r} checkpoint; this worker runs the LLaVA family "
            f"({', '.join(SUPPORTED_MODEL_TYPES)}) through transformers' own classes. Pass such a checkpoint, or set "
            "trust_remote_code: true to try another image-text-to-text model at your own risk.",
            details={"model": args.model, "model_type": model_type})
    return path, model_type


def load(args: Args, device: str, dtype_name: str, directory: Path, model_type: str) -> VisionModel:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    options = {"local_files_only": True, "trust_remote_code": args.trust_remote_code}
    try:
        processor = AutoProcessor.from_pretrained(str(directory), **options)
        model = AutoModelForImageTextToText.from_pretrained(
            str(directory), dtype=getattr(torch, dtype_name), use_safetensors=True,
            device_map=device if device.startswith("cuda") else None,  # straight to the GPU: no second copy in RAM
            **options)
    except Exception as exc:  # noqa: BLE001 - missing files, SafetensorError, shape mismatches: the checkpoint's fault
        if is_out_of_memory(exc):
            raise  # the runtime answers `resource`
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise ModelUnavailable(f"cannot load {args.model!r} from {directory}: the directory is incomplete, corrupt "
                               f"or not an image-text-to-text checkpoint in safetensors format ({reason})",
                               details={"model": args.model, "path": str(directory),
                                        "cause": type(exc).__name__}) from None
    if getattr(processor, "chat_template", None) is None:
        raise ModelUnavailable(f"model {args.model!r} has no chat template (chat_template.jinja or processor "
                               "config); the worker builds every prompt with it", details={"model": args.model})
    processor.tokenizer.padding_side = "left"  # batches end at the answer position: generation and scoring need it
    model.to(device).eval()  # a no-op where device_map already placed it
    return VisionModel(model=model, processor=processor, device=device, dtype=dtype_name, model_type=model_type)


#: How tokenizers spell a leading space inside a token: SentencePiece `▁Yes`, byte-level BPE `ĠYes`.
SPACE_MARKS = ("▁", "Ġ")


def _token_ids(tokenizer, words: tuple[str, ...], first_pieces: bool) -> list[int]:
    """Ids of `words` as single tokens: what encoding each word with and without a leading space gives, plus the
    vocabulary's own entries for the word with either space mark (SentencePiece encodes "Yes" and " Yes" alike)."""
    vocab = tokenizer.get_vocab() if not first_pieces else {}
    ids: list[int] = []
    for word in words:
        candidates = []
        for variant in (word, " " + word):
            encoded = tokenizer.encode(variant, add_special_tokens=False)
            if encoded and (len(encoded) == 1 or first_pieces):
                candidates.append(encoded[0])
        candidates += [vocab[spelling] for spelling in (word, *(m + word for m in SPACE_MARKS)) if spelling in vocab]
        ids += [i for i in dict.fromkeys(candidates) if i not in ids]  # each id once, first seen first
    return ids


def answer_tokens(tokenizer) -> AnswerTokens:
    """Yes/no variants (capitalised or not, with and without a leading space) that are single tokens.

    A tokenizer without such tokens (the tiny test model's) falls back to the first piece of each variant, minus
    pieces that start both a yes and a no variant (a bare space, say)."""
    yes, no = _token_ids(tokenizer, YES_WORDS, False), _token_ids(tokenizer, NO_WORDS, False)
    whole = bool(yes and no)
    if not whole:
        yes, no = _token_ids(tokenizer, YES_WORDS, True), _token_ids(tokenizer, NO_WORDS, True)
        shared = set(yes) & set(no)
        yes, no = [i for i in yes if i not in shared], [i for i in no if i not in shared]
    if not yes or not no:
        raise ModelUnavailable("the model's tokenizer has no tokens that tell 'yes' from 'no'; `validate` cannot "
                               "score with it (use `caption` or `ask`)")
    pieces = tokenizer.convert_ids_to_tokens
    return AnswerTokens(yes, no, list(pieces(yes)), list(pieces(no)), whole)
