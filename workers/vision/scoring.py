"""One batch through the model: yes/no scores from next-token logits, or generated text. torch is imported here.

Prompts come from the processor's own chat template (one image, one text turn), so a real checkpoint gets exactly
the format it was tuned on. Batches are left-padded and positions are counted from each row's first real token, so
a row's score does not depend on what it was batched with (tested: batch 1 vs 2 within 1e-5).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from workers.runtime import InternalError

from .llava import VisionModel


def prompt(model: VisionModel, question: str) -> str:
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return model.processor.apply_chat_template(conversation, add_generation_prompt=True)


def _inputs(model: VisionModel, images: Sequence[Any], questions: Sequence[str]) -> dict[str, Any]:
    import torch

    batch = model.processor(images=list(images), text=[prompt(model, q) for q in questions], padding=True,
                            return_tensors="pt")
    moved: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(model.device)
            if value.is_floating_point():  # pixel values follow the model's dtype; ids and masks stay integers
                value = value.to(getattr(torch, model.dtype))
        moved[key] = value
    return moved


def yes_probabilities(model: VisionModel, images: Sequence[Any], questions: Sequence[str]) -> list[float]:
    """P(yes) / (P(yes) + P(no)) at the answer position, each P summed over the yes/no token variants.

    Computed as sigmoid(logsumexp(yes logits) - logsumexp(no logits)): the same ratio without a softmax over the
    whole vocabulary, in float32 whatever the model's dtype."""
    import torch

    tokens = model.answer_tokens()
    inputs = _inputs(model, images, questions)
    mask = inputs["attention_mask"]
    position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)  # left padding must not shift the real tokens
    if "logits_to_keep" in inspect.signature(model.model.forward).parameters:  # native classes; remote code may lack it
        inputs["logits_to_keep"] = 1  # the answer position only: no (batch, tokens, vocab) tensor
    with torch.inference_mode():  # one forward pass, no generation: no KV cache to build
        logits = model.model(**inputs, position_ids=position_ids, use_cache=False).logits[:, -1, :].float()
    yes = torch.logsumexp(logits[:, tokens.yes_ids], dim=-1)
    no = torch.logsumexp(logits[:, tokens.no_ids], dim=-1)
    scores = torch.sigmoid(yes - no)
    if not torch.isfinite(scores).all():
        raise InternalError(f"the model gave non-finite yes/no logits in {model.dtype} (an overflow); run with "
                            "dtype bfloat16 or float32", retryable=False, details={"dtype": model.dtype})
    return scores.tolist()


def generate(model: VisionModel, images: Sequence[Any], questions: Sequence[str], max_new_tokens: int) -> list[str]:
    """Greedy answers, decoded from the new tokens only (any unicode; a random test model makes U+FFFD)."""
    import torch

    inputs = _inputs(model, images, questions)
    tokenizer = model.processor.tokenizer
    with torch.inference_mode():
        out = model.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                                   else tokenizer.eos_token_id)
    new_tokens = out[:, inputs["input_ids"].shape[1]:]
    return [text.strip() for text in model.processor.batch_decode(new_tokens, skip_special_tokens=True)]
