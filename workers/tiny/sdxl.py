"""Tiny random-weight Stable Diffusion XL pipeline (diffusers test-suite sizes, ~11 MB).

Loads with `StableDiffusionXLPipeline.from_pretrained(dir, local_files_only=True, dtype=torch.float32)`.
The VAE downsamples by 2 (real SDXL: 8), so any height/width that is a multiple of 8 works; 64x64 is the
natural size (unet sample_size 32).
"""

from __future__ import annotations

from pathlib import Path

from ._build import library_versions, log, staging


def build_sdxl(out_dir: Path) -> Path:
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from .tokenizers import clip_tokenizer

    info: dict = {"pipeline": "StableDiffusionXLPipeline", "sizes": {"default_hw": 64, "hw_multiple_of": 8}}
    with staging(out_dir, "sdxl", info) as tmp:
        tok = clip_tokenizer()
        text_cfg = dict(
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=5,
            hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=32, max_position_embeddings=tok.model_max_length,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg)).eval()
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_cfg)).eval()
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 time ids x addition_time_embed_dim + te2 projection
            cross_attention_dim=32 + 32,  # hidden states of both text encoders, concatenated
            norm_num_groups=1,
        )
        vae = AutoencoderKL(
            block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, sample_size=128,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        )
        scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                           steps_offset=1, timestep_spacing="leading")
        pipe = StableDiffusionXLPipeline(
            vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tok, tokenizer_2=tok,
            unet=unet, scheduler=scheduler, add_watermarker=False,
        )
        info["params"] = {n: sum(p.numel() for p in m.parameters())
                          for n, m in [("unet", unet), ("vae", vae), ("text_encoder", text_encoder),
                                       ("text_encoder_2", text_encoder_2)]}
        info["versions"] = library_versions("torch", "diffusers", "transformers")
        assert next(unet.parameters()).dtype == torch.float32
        pipe.save_pretrained(tmp, safe_serialization=True)
    log(f"sdxl: params {info['params']}")
    return Path(out_dir)
