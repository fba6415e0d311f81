"""Tiny random-weight LTX-Video pipeline (diffusers test-suite sizes, < 1 MB).

Loads with `LTXPipeline.from_pretrained(dir, local_files_only=True, dtype=torch.float32)` and also with
`LTXImageToVideoPipeline.from_pretrained(dir, ...)` (same components). Height/width must be multiples of 32;
the tiny VAE compresses 4x in space and 4x in time (real LTX: 32x, 8x); use num_frames = 8k+1.
"""

from __future__ import annotations

from pathlib import Path

from ._build import library_versions, log, staging


def build_ltx(out_dir: Path) -> Path:
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    from .tokenizers import t5_tokenizer

    info: dict = {"pipeline": "LTXPipeline", "also_loads_as": ["LTXImageToVideoPipeline"],
                  "sizes": {"hw_multiple_of": 32, "frames": "8k+1", "default_hw": 32, "default_frames": 9}}
    with staging(out_dir, "ltx", info) as tmp:
        tok = t5_tokenizer()
        text_encoder = T5EncoderModel(T5Config(
            vocab_size=len(tok), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            decoder_start_token_id=tok.pad_token_id,
        )).eval()
        transformer = LTXVideoTransformer3DModel(
            in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4, attention_head_dim=8,
            cross_attention_dim=32, num_layers=1,
            caption_channels=32,  # = T5 d_model
        )
        vae = AutoencoderKLLTXVideo(
            in_channels=3, out_channels=3, latent_channels=8,  # latent_channels = transformer in_channels
            block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
            layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
            spatio_temporal_scaling=(True, True, False, False), decoder_spatio_temporal_scaling=(True, True, False, False),
            decoder_inject_noise=(False,) * 5, upsample_residual=(False,) * 4, upsample_factor=(1,) * 4,
            timestep_conditioning=False, patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False,
        )
        # Runtime switches, not saved in the config (both already default to False in diffusers 0.42).
        vae.use_framewise_encoding = False
        vae.use_framewise_decoding = False
        pipe = LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                           tokenizer=tok, transformer=transformer)
        info["params"] = {n: sum(p.numel() for p in m.parameters())
                          for n, m in [("transformer", transformer), ("vae", vae), ("text_encoder", text_encoder)]}
        info["versions"] = library_versions("torch", "diffusers", "transformers")
        pipe.save_pretrained(tmp, safe_serialization=True)
    log(f"ltx: params {info['params']}")
    return Path(out_dir)
