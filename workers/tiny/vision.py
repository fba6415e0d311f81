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


def build_vision(out_dir: Path) -> Path:
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from .tokenizers import llava_tokenizer

    n_patches = (IMAGE_SIZE // PATCH_SIZE) ** 2  # the CLS token is dropped by strategy "default"
    info: dict = {"model_class": "LlavaForConditionalGeneration", "processor": "LlavaProcessor",
                  "sizes": {"image": IMAGE_SIZE, "patch": PATCH_SIZE, "image_tokens": n_patches}}
    with staging(out_dir, "vision", info) as tmp:
        tok = llava_tokenizer()
        image_token_id = tok.convert_tokens_to_ids("<image>")
        vision = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                                  image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32)
        text = LlamaConfig(
            vocab_size=len(tok),  # every id the model can emit must decode
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=tok.model_max_length,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )
        config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token_id,
                             image_seq_length=n_patches, vision_feature_select_strategy="default",
                             vision_feature_layer=-2, projector_hidden_act="gelu")
        model = LlavaForConditionalGeneration(config).eval()
        assert next(model.parameters()).dtype == torch.float32
        model.generation_config.bos_token_id = tok.bos_token_id
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
        processor = LlavaProcessor(
            image_processor=_image_processor(), tokenizer=tok, patch_size=PATCH_SIZE,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,  # CLIP towers add a CLS token; 0 gives a token/feature mismatch
            chat_template=CHAT_TEMPLATE, image_token="<image>",
        )
        info["params"] = {"total": sum(p.numel() for p in model.parameters())}
        info["image_processor"] = type(processor.image_processor).__name__
        info["versions"] = library_versions("torch", "transformers", "tokenizers")
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
    log(f"vision: params {info['params']}, image processor {info['image_processor']}")
    return Path(out_dir)
