"""The LTX-Video worker with the tiny random-weight pipeline: real processes for the contract, in-process for faults.

Cold starts cost ~6 s here (diffusers import), so the real-process tests share one one-shot pair and one
`--serve` session; the OOM ladder and progress run in-process through the same `execute` the CLI uses. Clips
are read back with both PyAV and ffprobe.
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

LTX = [sys.executable, "-m", "workers.ltx"]


@pytest.fixture(scope="module")
def tiny_ltx(tmp_path_factory) -> Path:
    from workers.tiny import build_ltx

    return build_ltx(tmp_path_factory.mktemp("tiny") / "ltx")


@pytest.fixture(scope="module")
def keyframe(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("key") / "key.png"
    pixels = (np.random.default_rng(0).random((50, 80, 3)) * 255).astype("uint8")
    Image.fromarray(pixels).convert("RGBA").save(path)  # RGBA: the worker must convert it to RGB
    return path


def base_args(model: Path, out: Path, **fields) -> dict:
    return {"prompt": "a red fox running through snow, slow pan", "model": str(model), "output_dir": str(out),
            "width": 32, "height": 64, "num_frames": 9, "fps": 8, "steps": 2, "seed": 7, **fields}


def decoded(path: str | Path) -> np.ndarray:
    """Every frame of the first video stream, RGB (PyAV)."""
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def probe(path: str | Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=codec_name,width,height,nb_read_frames,pix_fmt,r_frame_rate", "-of", "json",
                          str(path)], capture_output=True, check=True, text=True).stdout
    return json.loads(out)["streams"][0]


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def check_clip(result: dict, outputs: list[dict], frames: int, fps: int, size: tuple[int, int]) -> np.ndarray:
    """The mp4 and poster say what the result says; returns the decoded frames."""
    from PIL import Image

    assert (result["frames"], result["fps"], (result["width"], result["height"])) == (frames, fps, size)
    assert result["duration_s"] == pytest.approx(frames / fps, abs=1e-3)
    info = probe(result["path"])
    assert info == {"codec_name": "h264", "width": size[0], "height": size[1], "pix_fmt": "yuv420p",
                    "r_frame_rate": f"{fps}/1", "nb_read_frames": str(frames)}
    head = Path(result["path"]).read_bytes()[:4096]
    assert b"moov" in head and head.find(b"moov") < max(head.find(b"mdat"), 4096)  # +faststart: index first
    clip = decoded(result["path"])
    assert clip.shape == (frames, size[1], size[0], 3)
    with Image.open(result["poster_path"]) as poster:
        assert poster.format == "PNG" and poster.size == size
        # the first frame: compare luma (yuv420p halves chroma, which random tiny-model pixels are full of)
        assert np.abs(luma(np.asarray(poster.convert("RGB"))) - luma(clip[0])).mean() < 4
    for output in outputs:
        assert output["sha256"] == hashlib.sha256(Path(output["path"]).read_bytes()).hexdigest()
    assert {o["path"] for o in outputs} == {result["path"], result["poster_path"]}
    return clip


# --- one-shot: t2v with 10 frames -> 9, delivery size, determinism across processes ---------------------------

@pytest.mark.slow
def test_one_shot_clip_reads_back_snaps_frames_and_repeats_across_processes(tiny_ltx, tmp_path):
    args = base_args(tiny_ltx, tmp_path / "a", num_frames=10, output_size={"width": 90, "height": 160})
    (tmp_path / "a_args").mkdir()
    code, doc = run(LTX, tmp_path / "a_args", args)
    assert code == 0, doc["error"]
    result = doc["result"]
    assert result["frames_requested"] == 10 and result["mode"] == "text_to_video"
    assert (result["generated_width"], result["generated_height"]) == (32, 64)
    assert doc["warnings"] == ["num_frames asks for 10 frames; LTX needs 8k+1 frames, so 9 are generated "
                               "(1.125 s at 8 fps)"]
    assert [o["media_type"] for o in doc["outputs"]] == ["video/mp4", "image/png"]
    clip = check_clip(result, doc["outputs"], 9, 8, (90, 160))

    (tmp_path / "b_args").mkdir()
    code, again = run(LTX, tmp_path / "b_args", {**args, "output_dir": str(tmp_path / "b")})
    assert code == 0
    assert np.array_equal(decoded(again["result"]["path"]), clip)  # same decoded frames in another process


# --- warm: t2v -> i2v -> t2v on one load ------------------------------------------------------------------------

@pytest.mark.slow
def test_warm_worker_switches_text_and_image_to_video_on_one_load(tiny_ltx, keyframe, tmp_path):
    serve = ServeSession(LTX)
    try:
        first = serve.run("t2v", base_args(tiny_ltx, tmp_path / "t2v"))
        reference = check_clip(first["result"], first["outputs"], 9, 8, (32, 64))
        assert first["warnings"] == []

        i2v = serve.run("i2v", base_args(tiny_ltx, tmp_path / "i2v", image_path=str(keyframe), duration_s=2.0,
                                         num_frames=None, fps=12, name="shot_01"))
        result = i2v["result"]
        assert result["mode"] == "image_to_video" and Path(result["path"]).name == "shot_01.mp4"
        assert result["frames_requested"] == 24 and "so 25 are generated" in i2v["warnings"][0]
        check_clip(result, i2v["outputs"], 25, 12, (32, 64))
        assert i2v["metrics"]["model_loads"] == 1 and i2v["metrics"]["model_cache_hit"] is True

        noisy = serve.run("noisy", base_args(tiny_ltx, tmp_path / "noisy", image_path=str(keyframe),
                                             duration_s=2.0, num_frames=None, fps=12, image_cond_noise_scale=0.5))
        assert noisy["result"]["frames"] == 25
        assert not np.array_equal(decoded(noisy["result"]["path"]), decoded(result["path"]))  # the noise acts

        again = serve.run("t2v-again", base_args(tiny_ltx, tmp_path / "again"))
        assert np.array_equal(decoded(again["result"]["path"]), reference)  # i2v left nothing behind
        assert again["metrics"]["model_loads"] == 1
    finally:
        serve.close()


# --- bad input: exit 2, nothing written ---------------------------------------------------------------------------

@pytest.mark.parametrize("fields, path, text", [
    ({"width": 100, "height": 64}, "$.width", "96 and 128"),
    ({"width": 64}, "$.height", "together with `width`"),
    ({"aspect": "9:16", "width": 64, "height": 64}, "$.width", "not both"),
    ({"duration_s": 0}, "$.duration_s", ""),
    ({"duration_s": -1.5}, "$.duration_s", ""),
    ({"num_frames": 0}, "$.num_frames", ""),
    ({"num_frames": 9, "duration_s": 1.0}, "$.duration_s", "not both"),
    ({"output_size": {"width": 91, "height": 160}}, "$.output_size.width", "90 and 92"),
    ({"image_path": "/nonexistent/key.png"}, "$.image_path", "does not exist"),
    ({"image_path": "CORRUPT"}, "$.image_path", "does not decode as an image"),
    ({"device": "cpu", "offload": "model"}, "$.offload", "accelerator"),
])
def test_bad_input_is_invalid_input_with_exit_2_and_writes_nothing(tmp_path, fields, path, text):
    if fields.get("image_path") == "CORRUPT":
        (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
        fields = {"image_path": str(tmp_path / "corrupt.png")}
    args = {"prompt": "a fox", "model": "/no/such/model", "output_dir": str(tmp_path / "out"), **fields}
    code, doc = run(LTX, tmp_path, args)
    assert code == 2 and doc["error"]["kind"] == "invalid_input"
    assert path in {e["path"] for e in doc["error"]["details"]["field_errors"]}
    assert text in doc["error"]["message"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fit, corner_black", [("cover", False), ("contain", True), ("stretch", False)])
def test_the_first_frame_is_fitted_to_the_generation_size(keyframe, fit, corner_black):
    from workers.ltx.contract import Args
    from workers.ltx.worker import Plan, _first_frame

    args = Args(prompt="a fox", model="m", output_dir="/tmp/x", image_path=str(keyframe), fit=fit)
    image = _first_frame(args, Plan(width=32, height=64, frames=9, frames_requested=9, seed=0, seed_drawn=False))
    assert image.mode == "RGB" and image.size == (32, 64)  # the keyframe is an 80x50 RGBA PNG
    assert (image.getpixel((0, 0)) == (0, 0, 0)) is corner_black  # contain pads with black bars


def test_frame_counts_snap_to_8k_plus_1():
    from workers.ltx.sizes import fewer_frames, snap_frames

    assert [snap_frames(n) for n in (1, 2, 5, 9, 10, 12, 13, 100, 257)] == [1, 1, 9, 9, 9, 9, 17, 97, 257]
    assert [fewer_frames(n) for n in (97, 49, 25, 9, 1)] == [49, 25, 9, 1, 1]


# --- in-process: the OOM ladder and progress ---------------------------------------------------------------------

def _execute(args: dict):
    from workers.ltx.worker import LtxWorker
    from workers.runtime.cache import ModelCache
    from workers.runtime.engine import execute

    return execute(LtxWorker(), args, ModelCache())


def _failing_calls(monkeypatch, failures: int) -> list[int]:
    """Make the first `failures` pipeline calls raise OOM; returns num_frames of every call."""
    from diffusers import LTXPipeline

    return fail_first_calls(monkeypatch, LTXPipeline, failures, lambda kwargs: kwargs["num_frames"])


@pytest.mark.slow
def test_oom_climbs_to_fewer_frames_only_with_allow_degrade(tiny_ltx, tmp_path, monkeypatch):
    calls = _failing_calls(monkeypatch, failures=2)
    envelope, code = _execute(base_args(tiny_ltx, tmp_path / "o", num_frames=25, allow_degrade=True))
    assert code == 0, envelope.error
    assert calls == [25, 25, 9]  # CPU: vae tiling, then fewer frames (offload rungs need an accelerator)
    assert envelope.result["frames"] == 9 and envelope.result["memory_rung"] == "fewer_frames"
    assert envelope.metrics.model_extra["memory_rung"] == "fewer_frames"
    assert envelope.warnings == ["out of memory: retrying with vae tiling",
                                 "allow_degrade: 25 frames did not fit in memory; generating 9",
                                 "out of memory: retrying with fewer frames"]
    assert probe(envelope.result["path"])["nb_read_frames"] == "9"


@pytest.mark.slow
def test_oom_without_allow_degrade_is_resource_and_writes_nothing(tiny_ltx, tmp_path, monkeypatch):
    calls = _failing_calls(monkeypatch, failures=100)
    envelope, code = _execute(base_args(tiny_ltx, tmp_path / "o", num_frames=25))
    assert code == 4 and envelope.error.kind == "resource" and envelope.error.retryable
    assert calls == [25, 25]  # the frame count is never lowered unasked
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_one_progress_event_per_denoising_step_and_one_for_encoding(tiny_ltx, tmp_path, capfd):
    envelope, code = _execute(base_args(tiny_ltx, tmp_path / "o", steps=3))
    assert code == 0
    events = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith('{"event":"progress"')]
    assert [e["step"] for e in events if e["message"] == "denoising"] == [1, 2, 3]
    assert [e["message"] for e in events].count("encoding") == 1
    fractions = [e["fraction"] for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_a_missing_model_is_model_unavailable_and_writes_nothing(tmp_path):
    code, doc = run(LTX, tmp_path, {"prompt": "a fox", "model": str(tmp_path / "nope"),
                                    "output_dir": str(tmp_path / "out")})
    assert code == 3 and doc["error"]["kind"] == "model_unavailable"
    assert not (tmp_path / "out").exists()
