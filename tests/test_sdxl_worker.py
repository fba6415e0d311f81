"""The SDXL worker with the tiny random-weight pipeline: real processes for the contract, in-process for faults.

Cold starts cost ~6 s here (diffusers import), so the real-process tests share one one-shot pair and one
`--serve` session; the OOM ladder and the NaN path run in-process through the same `execute` the CLI uses.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from worker_process import ServeSession, fail_first_calls, run

from conftest import REPO

SDXL = [sys.executable, "-m", "workers.sdxl"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory) -> Path:
    from workers.tiny import build_sdxl

    return build_sdxl(tmp_path_factory.mktemp("tiny") / "sdxl")


@pytest.fixture(scope="module")
def tiny_lora(tiny_sdxl, tmp_path_factory) -> Path:
    """A LoRA for the tiny UNet with random (non-zero) weights, saved with diffusers' own LoRA writer."""
    import torch
    from diffusers import StableDiffusionXLPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl), local_files_only=True)
    torch.manual_seed(0)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    out = tmp_path_factory.mktemp("lora")
    StableDiffusionXLPipeline.save_lora_weights(str(out), unet_lora_layers=get_peft_model_state_dict(pipe.unet),
                                                safe_serialization=True)
    return out / "pytorch_lora_weights.safetensors"


def base_args(model: Path, out: Path, **fields) -> dict:
    return {"prompts": [{"prompt": "a red fox in the snow", "seed": 11},
                        {"prompt": "a city street at night", "seed": 12, "name": "city"}],
            "model": str(model), "output_dir": str(out), "steps": 3, **fields}


def pixels(path: str | Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- one-shot: files, sizes, metadata, hashes, determinism across processes --------------------------------

def test_one_shot_images_decode_at_size_carry_metadata_and_repeat_across_processes(tiny_sdxl, tmp_path):
    from workers.sdxl.images import read_parameters

    args = base_args(tiny_sdxl, tmp_path / "a", aspect="9:16", output_size={"width": 90, "height": 160},
                     negative_prompt="blurry")
    (tmp_path / "a_args").mkdir()
    code, doc = run(SDXL, tmp_path / "a_args", args)
    assert code == 0, doc["error"]
    images = doc["result"]["images"]
    assert [i["name"] for i in images] == ["keyframe_01", "city"]
    for image in images:
        assert (image["generated_width"], image["generated_height"]) == (48, 88)  # 768x1344 at the tiny 64 px
        assert pixels(image["path"]).shape == (160, 90, 3)
        params = read_parameters(Path(image["path"]))
        assert params["seed"] == image["seed"] and params["prompt"] == image["prompt"]
        assert params["negative_prompt"] == "blurry" and params["steps"] == 3 and params["model"] == str(tiny_sdxl)
    for output in doc["outputs"]:
        assert output["sha256"] == sha(output["path"]) and output["media_type"] == "image/png"

    (tmp_path / "b_args").mkdir()
    code, again = run(SDXL, tmp_path / "b_args", {**args, "output_dir": str(tmp_path / "b")})
    assert code == 0
    assert [o["sha256"] for o in again["outputs"]] == [o["sha256"] for o in doc["outputs"]]  # byte-identical


# --- warm: batching, LoRA without leaks, scheduler per request, formats, refiner ----------------------------

def test_warm_worker_batches_loras_and_schedulers_without_leaks(tiny_sdxl, tiny_lora, tmp_path):
    from workers.sdxl.images import read_parameters

    serve = ServeSession(SDXL)
    try:
        plain = serve.run("plain", base_args(tiny_sdxl, tmp_path / "plain", aspect="16:9"))
        assert plain["success"], plain["error"]
        reference = [pixels(i["path"]) for i in plain["result"]["images"]]
        assert reference[0].shape == (48, 88, 3)

        batched = serve.run("batched", base_args(tiny_sdxl, tmp_path / "batched", aspect="16:9", batch_size=2))
        for ref, image in zip(reference, batched["result"]["images"], strict=True):
            assert np.abs(pixels(image["path"]) - ref).max() <= 1  # within 1/255 per channel

        lora = serve.run("lora", base_args(tiny_sdxl, tmp_path / "lora", aspect="16:9", scheduler="ddim",
                                           loras=[{"path": str(tiny_lora), "scale": 1.0}]))
        assert lora["success"], lora["error"]
        assert np.abs(pixels(lora["result"]["images"][0]["path"]) - reference[0]).mean() > 1  # the LoRA shows
        assert read_parameters(Path(lora["result"]["images"][0]["path"]))["loras"][0]["path"] == str(tiny_lora)

        after = serve.run("after", base_args(tiny_sdxl, tmp_path / "after", aspect="16:9"))
        assert [o["sha256"] for o in after["outputs"]] == [o["sha256"] for o in plain["outputs"]]  # nothing leaked
        assert after["metrics"]["model_loads"] == 1 and after["metrics"]["model_cache_hit"] is True

        for image_format, media_type in (("webp", "image/webp"), ("jpeg", "image/jpeg")):
            answer = serve.run(image_format, base_args(tiny_sdxl, tmp_path / image_format, image_format=image_format,
                                                       quality=90, prompts=["a lighthouse"]))
            image = answer["result"]["images"][0]
            assert answer["outputs"][0]["media_type"] == media_type and image["seed_drawn"] is True
            assert read_parameters(Path(image["path"]))["seed"] == image["seed"]

        refined = serve.run("refiner", base_args(tiny_sdxl, tmp_path / "refined",
                                                 refiner={"model": str(tiny_sdxl), "high_noise_frac": 0.6}))
        assert refined["success"], refined["error"]
        assert refined["result"]["refiner"] == str(tiny_sdxl)
        assert refined["metrics"]["model_loads"] == 2  # base+refiner is its own cached model
    finally:
        serve.close()


# --- bad input: refused before torch, nothing written ---------------------------------------------------------

@pytest.mark.parametrize("fields, path", [
    ({"prompts": []}, "$.prompts"),
    ({"prompts": ["   "]}, "$.prompts[0]"),
    ({"prompts": [{"prompt": "a"}, {"prompt": "b", "name": "keyframe_01"}]}, "$.prompts[1].name"),
    ({"width": 100, "height": 64}, "$.width"),
    ({"scheduler": "plms"}, "$.scheduler"),
    ({"aspect": "9:16", "width": 64, "height": 64}, "$.width"),
    ({"device": "cpu", "offload": "model"}, "$.offload"),
    ({"offload": "sequential"}, "$.offload"),  # device auto on a machine without a GPU
    ({"loras": [{"path": "/nonexistent/x.safetensors"}]}, "$.loras[0].path"),
    ({"loras": [{"path": "weights.bin"}]}, "$.loras[0].path"),
])
def test_bad_input_is_refused_before_torch_and_writes_nothing(tmp_path, fields, path):
    args = {"prompts": ["a fox"], "model": "/no/such/model", "output_dir": str(tmp_path / "out"), **fields}
    code, doc = run(SDXL, tmp_path, args)
    assert code == 2 and doc["error"]["kind"] == "invalid_input"
    assert path in {e["path"] for e in doc["error"]["details"]["field_errors"]}
    assert not (tmp_path / "out").exists()
    if fields.get("width") == 100:
        assert "96 and 104" in doc["error"]["message"]


def test_bad_input_and_a_missing_model_never_import_torch(tmp_path):
    for fields in ({"width": 100, "height": 64}, {"model": str(tmp_path / "nope")}):
        (tmp_path / "args.json").write_text(json.dumps({"prompts": ["a fox"], "model": "m",
                                                        "output_dir": str(tmp_path / "out"), **fields}))
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "workers.sdxl", "--input",
                               str(tmp_path / "args.json")], capture_output=True, cwd=REPO, timeout=120)
        assert proc.returncode in (2, 3)
        imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.decode().splitlines() if "|" in line}
        assert "pydantic" in imported and not imported & {"torch", "diffusers", "transformers"}


def test_a_file_that_is_not_safetensors_is_refused(tmp_path):
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"\x00" * 64)
    code, doc = run(SDXL, tmp_path, {"prompts": ["a fox"], "model": "m", "output_dir": str(tmp_path / "out"),
                                     "loras": [{"path": str(fake)}]})
    assert code == 2 and "not a safetensors file" in doc["error"]["message"]


def test_a_missing_model_is_model_unavailable(tmp_path):
    code, doc = run(SDXL, tmp_path, {"prompts": ["a fox"], "model": str(tmp_path / "nope"),
                                     "output_dir": str(tmp_path / "out")})
    assert code == 3 and doc["error"]["kind"] == "model_unavailable"
    assert not (tmp_path / "out").exists()


# --- in-process: the OOM ladder and the NaN/black re-decode ----------------------------------------------------

def _execute(args: dict):
    from workers.runtime.cache import ModelCache
    from workers.runtime.engine import execute
    from workers.sdxl.worker import SdxlWorker

    return execute(SdxlWorker(), args, ModelCache())


def _failing_calls(monkeypatch, failures: int) -> list[int]:
    """Make the first `failures` pipeline calls raise OOM; returns the batch size of every call."""
    from diffusers import StableDiffusionXLPipeline

    return fail_first_calls(monkeypatch, StableDiffusionXLPipeline, failures, lambda kwargs: len(kwargs["prompt"]))


def test_oom_climbs_the_ladder_and_reports_the_rung(tiny_sdxl, tmp_path, monkeypatch):
    sizes = _failing_calls(monkeypatch, failures=2)
    envelope, code = _execute(base_args(tiny_sdxl, tmp_path / "o", batch_size=2))
    assert code == 0, envelope.error
    # CPU: vae_tiling, then smaller batches (the offload rungs need an accelerator)
    assert sizes == [2, 2, 1, 1]
    assert envelope.result["memory_rung"] == "smaller_batch" and envelope.metrics.model_extra["memory_rung"] == "smaller_batch"
    assert envelope.warnings == ["out of memory: retrying with vae tiling", "out of memory: batch size lowered to 1"]


def test_oom_with_the_ladder_exhausted_is_resource(tiny_sdxl, tmp_path, monkeypatch):
    _failing_calls(monkeypatch, failures=100)
    envelope, code = _execute(base_args(tiny_sdxl, tmp_path / "o", batch_size=2))
    assert code == 4 and envelope.error.kind == "resource" and envelope.error.retryable
    assert not (tmp_path / "o").exists()


def test_a_nan_decode_is_detected_and_decoded_again_in_fp32(tiny_sdxl, tmp_path, monkeypatch):
    from workers.sdxl import images

    clean, _ = _execute(base_args(tiny_sdxl, tmp_path / "clean"))
    real = images.failed_decode
    calls = []

    def first_fails(pixels):
        calls.append(1)
        return len(calls) == 1 or real(pixels)  # as if the fp16 VAE had overflowed on the first image

    monkeypatch.setattr(images, "failed_decode", first_fails)
    envelope, code = _execute(base_args(tiny_sdxl, tmp_path / "fixed"))
    assert code == 0
    first = envelope.result["images"][0]
    assert first["fp32_vae_redecode"] is True and "decoded again with the VAE in float32" in envelope.warnings[0]
    assert np.abs(pixels(first["path"]) - pixels(clean.result["images"][0]["path"])).max() <= 1


@pytest.mark.parametrize("value, bad", [(np.zeros((4, 4, 3)), True), (np.full((4, 4, 3), np.nan), True),
                                        (np.full((4, 4, 3), 0.2), False)])
def test_failed_decode_spots_black_and_nan(value, bad):
    from workers.sdxl.images import failed_decode

    assert failed_decode(value) is bad


def test_one_progress_event_per_denoising_step(tiny_sdxl, tmp_path, capfd):
    envelope, code = _execute(base_args(tiny_sdxl, tmp_path / "o", batch_size=1))
    assert code == 0
    events = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith('{"event":"progress"')]
    steps = [(e["item"], e["step"]) for e in events if e["message"] == "denoising"]
    assert steps == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]  # 2 images x 3 steps, in order
    fractions = [e["fraction"] for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_a_lora_with_the_wrong_shapes_is_invalid_input_and_leaves_the_model_clean(tiny_sdxl, tiny_lora, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from workers.runtime.cache import ModelCache
    from workers.runtime.engine import execute
    from workers.sdxl.worker import SdxlWorker

    tensors = load_file(str(tiny_lora))
    key = next(k for k in tensors if "lora_A" in k)
    tensors[key] = torch.zeros(tensors[key].shape[0] + 3, tensors[key].shape[1])  # a rank that does not match
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad))
    worker, cache = SdxlWorker(), ModelCache()
    plain, _ = execute(worker, base_args(tiny_sdxl, tmp_path / "p1"), cache)
    envelope, code = execute(worker, base_args(tiny_sdxl, tmp_path / "bad", loras=[{"path": str(bad)}]), cache)
    assert code == 2 and envelope.error.details["field_errors"][0]["path"] == "$.loras[0].path", envelope.error
    again, _ = execute(worker, base_args(tiny_sdxl, tmp_path / "p2"), cache)
    assert [o.sha256 for o in again.outputs] == [o.sha256 for o in plain.outputs] and cache.loads == 1
