"""Tiny random-weight LLaVA (CLIP vision tower + Llama text model) with its processor (< 1 MB).

Loads with `LlavaForConditionalGeneration.from_pretrained(dir, dtype=torch.float32)` and
`AutoProcessor.from_pretrained(dir)`. Images are resized to 32x32 and become 16 `<image>` tokens; the
chat template renders llava-1.5 style prompts ("USER: <image>\\n... ASSISTANT:"). Generated text is
random bytes, often invalid UTF-8 (decoded as U+FFFD).
"""

from __future__ import annotations

from pathlib import Path

from ._build import library_versions, log, staging

IMAGE_SIZE = 32
PATCH_SIZE = 8

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %} {% else %}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def _image_processor():
    """The PIL-backend CLIP image processor: the default class needs torchvision, which we never install."""
    kwargs = dict(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    try:
        from transformers import CLIPImageProcessorPil
    except ImportError:  # older transformers: CLIPImageProcessor is the PIL one (or warns and falls back)
        from transformers import CLIPImageProcessor as CLIPImageProcessorPil
    return CLIPImageProcessorPil(**kwargs)


def _text_and_vision_configs(tok):
    from transformers import CLIPVisionConfig, LlamaConfig

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                              image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32)
    text = LlamaConfig(
        vocab_size=len(tok),  # every id the model can emit must decode
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=tok.model_max_length,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    return text, vision


def _save(model, processor, tok, tmp: Path, info: dict) -> None:
    import torch

    assert next(model.parameters()).dtype == torch.float32
    model.generation_config.bos_token_id = tok.bos_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    info["params"] = {"total": sum(p.numel() for p in model.parameters())}
    info["image_processor"] = type(processor.image_processor).__name__
    info["versions"] = library_versions("torch", "transformers", "tokenizers")
    model.save_pretrained(tmp, safe_serialization=True)
    processor.save_pretrained(tmp)


#: Processor settings both tiny LLaVAs share: CLIP towers add a CLS token (num_additional_image_tokens=1; 0 gives a
#: token/feature mismatch), and the llava-1.5 style chat template.
_PROCESSOR_KWARGS = dict(patch_size=PATCH_SIZE, vision_feature_select_strategy="default",
                         num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE, image_token="<image>")
_LLAVA_KWARGS = dict(vision_feature_select_strategy="default", vision_feature_layer=-2, projector_hidden_act="gelu",
                     image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2)  # the CLS token is dropped by "default"


def build_vision(out_dir: Path) -> Path:
    """LLaVA-1.5 layout: one 32x32 view per image, 16 image tokens."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from .tokenizers import llava_tokenizer

    info: dict = {"model_class": "LlavaForConditionalGeneration", "processor": "LlavaProcessor",
                  "sizes": {"image": IMAGE_SIZE, "patch": PATCH_SIZE, "image_tokens": (IMAGE_SIZE // PATCH_SIZE) ** 2}}
    with staging(out_dir, "vision", info) as tmp:
        tok = llava_tokenizer()
        text, vision = _text_and_vision_configs(tok)
        config = LlavaConfig(vision_config=vision, text_config=text,
                             image_token_index=tok.convert_tokens_to_ids("<image>"), **_LLAVA_KWARGS)
        processor = LlavaProcessor(image_processor=_image_processor(), tokenizer=tok, **_PROCESSOR_KWARGS)
        _save(LlavaForConditionalGeneration(config).eval(), processor, tok, tmp, info)
    log(f"vision: params {info['params']}, image processor {info['image_processor']}")
    return Path(out_dir)


#: LLaVA-NeXT's any-resolution grid at tiny scale: an image is tiled to the best-fitting pinpoint, so images of
#: different shapes give different numbers of image tokens (what real NeXT checkpoints do at 336 px).
NEXT_PINPOINTS = [[IMAGE_SIZE, IMAGE_SIZE], [IMAGE_SIZE, 2 * IMAGE_SIZE], [2 * IMAGE_SIZE, IMAGE_SIZE]]


def build_vision_next(out_dir: Path) -> Path:
    """LLaVA-NeXT layout (`llava_next`): any-resolution tiles and `image_sizes`, through the same native classes."""
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor

    try:
        from transformers import LlavaNextImageProcessorPil as NextImageProcessor
    except ImportError:  # older transformers: the class is PIL-based already
        from transformers import LlavaNextImageProcessor as NextImageProcessor

    from .tokenizers import llava_tokenizer

    info: dict = {"model_class": "LlavaNextForConditionalGeneration", "processor": "LlavaNextProcessor",
                  "sizes": {"image": IMAGE_SIZE, "patch": PATCH_SIZE, "pinpoints": NEXT_PINPOINTS}}
    with staging(out_dir, "vision_next", info) as tmp:
        tok = llava_tokenizer()
        text, vision = _text_and_vision_configs(tok)
        config = LlavaNextConfig(vision_config=vision, text_config=text, image_grid_pinpoints=NEXT_PINPOINTS,
                                 image_token_index=tok.convert_tokens_to_ids("<image>"), **_LLAVA_KWARGS)
        image_processor = NextImageProcessor(size={"shortest_edge": IMAGE_SIZE}, image_grid_pinpoints=NEXT_PINPOINTS,
                                             crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
        processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tok, **_PROCESSOR_KWARGS)
        _save(LlavaNextForConditionalGeneration(config).eval(), processor, tok, tmp, info)
    log(f"vision_next: params {info['params']}, image processor {info['image_processor']}")
    return Path(out_dir)
