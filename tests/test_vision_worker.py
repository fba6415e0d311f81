"""The LLaVA scene-check worker with the tiny random-weight LLaVA: real processes for the contract, in-process for
batching, the OOM ladder and progress.

The scores of a random model mean nothing; what is tested is that they are the yes/no next-token computation
(redone here directly with transformers), deterministic, independent of batching, and thresholded as documented.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from worker_process import ServeSession, paths, run

from conftest import REPO

VISION = [sys.executable, "-m", "workers.vision"]
UNICODE_QUESTION = "¿Qué muestra la imagen? 画面に狐はいますか — «oui» ou non?"


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    from workers.tiny import build_vision

    return build_vision(tmp_path_factory.mktemp("tiny") / "vision")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Three different images: random noise (tall, RGBA), a flat red JPEG, a gradient wider than max_image_side."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    noise = (np.random.default_rng(0).random((300, 200, 4)) * 255).astype("uint8")
    Image.fromarray(noise, "RGBA").save(folder / "noise.png")
    Image.new("RGB", (64, 48), (200, 30, 30)).save(folder / "red.jpg")
    gradient = np.tile(np.linspace(0, 255, 2000, dtype=np.uint8)[None, :, None], (400, 1, 3))
    Image.fromarray(gradient).save(folder / "wide.png")
    return [folder / "noise.png", folder / "red.jpg", folder / "wide.png"]


def validate_args(model: Path, out: Path, images: list[Path], **fields) -> dict:
    expected = ["a red fox standing in deep snow at sunset", "a cat", "a calm sea"]
    return {"images": [{"path": str(p), "expected": e} for p, e in zip(images, expected, strict=False)],
            "model": str(model), "output_dir": str(out), **fields}


def direct_score(model_dir: Path, image_path: Path, question: str, max_side: int = 1024) -> float:
    """P(yes)/(P(yes)+P(no)) for one image, computed here with transformers alone (no worker code)."""
    import torch
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True)
    with Image.open(image_path) as image:
        image = image.convert("RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True)
    inputs = processor(images=[image], text=[text], return_tensors="pt")
    with torch.inference_mode():
        logits = model(**inputs).logits[0, -1].float()
    probabilities = torch.softmax(logits, dim=-1)

    def first_pieces(words):  # the tiny tokenizer has no whole "Yes"/"No" token: first pieces of each variant
        return {processor.tokenizer.encode(v, add_special_tokens=False)[0] for w in words for v in (w, " " + w)}

    yes, no = first_pieces(("Yes", "yes", "YES")), first_pieces(("No", "no", "NO"))
    yes, no = yes - no, no - yes
    p_yes, p_no = probabilities[sorted(yes)].sum(), probabilities[sorted(no)].sum()
    return float(p_yes / (p_yes + p_no))


# --- validate: the documented computation, deterministic, thresholded -----------------------------------------

@pytest.mark.slow
def test_validate_scores_are_the_yes_no_logit_ratio_and_repeat_across_processes(tiny_llava, images, tmp_path):
    args = validate_args(tiny_llava, tmp_path / "a", images[:2], report="checks.json")
    (tmp_path / "a_args").mkdir()
    code, doc = run(VISION, tmp_path / "a_args", args)
    assert code == 0, doc["error"]
    result = doc["result"]
    scores = [item["score"] for item in result["items"]]
    assert all(0.0 <= s <= 1.0 for s in scores) and scores[0] != scores[1]
    for item, image in zip(result["items"], images, strict=False):
        assert item["question"] == f"Does this image show {item['expected']}? Answer the question using a single " \
                                   "word or phrase."
        assert item["score"] == pytest.approx(direct_score(tiny_llava, image, item["question"]), abs=1e-5)
        assert item["match"] is (item["score"] >= 0.5)
    assert (result["items"][0]["width"], result["items"][0]["height"]) == (200, 300)
    assert result["yes_tokens"] == ["Y", "y"] and result["no_tokens"] == ["N", "n"]
    report = json.loads(Path(result["report_path"]).read_text("utf-8"))
    assert report == result and [o["path"] for o in doc["outputs"]] == [result["report_path"]]

    threshold = (scores[0] + scores[1]) / 2  # between the two: exactly one image matches
    (tmp_path / "b_args").mkdir()
    code, again = run(VISION, tmp_path / "b_args", {**args, "output_dir": str(tmp_path / "b"), "threshold": threshold})
    assert code == 0
    assert [i["score"] for i in again["result"]["items"]] == scores  # bit-identical in another process
    assert [i["match"] for i in again["result"]["items"]] == [s >= threshold for s in scores]
    assert again["result"]["matched"] == 1 and again["result"]["all_match"] is False


# --- caption, ask and explain: text of any unicode, one JSON document, one load in warm mode --------------------

@pytest.mark.slow
def test_warm_worker_captions_answers_and_explains_on_one_load(tiny_llava, images, tmp_path):
    serve = ServeSession(VISION)
    try:
        caption = serve.run("caption", {"images": [str(p) for p in images], "task": "caption",
                                        "model": str(tiny_llava), "output_dir": str(tmp_path / "c"),
                                        "max_new_tokens": 6, "batch_size": 2})
        assert caption["success"], caption["error"]
        items = caption["result"]["items"]
        assert [i["index"] for i in items] == [0, 1, 2] and all(isinstance(i["caption"], str) for i in items)
        assert all(i["question"] == "Describe this image in one sentence." and i["score"] is None for i in items)
        assert caption["result"]["all_match"] is None and caption["result"]["yes_tokens"] == []

        ask = serve.run("ask", {"images": [{"path": str(images[0]), "question": UNICODE_QUESTION},
                                           str(images[1])],
                                "task": "ask", "question": "What colour dominates?", "model": str(tiny_llava),
                                "output_dir": str(tmp_path / "q"), "max_new_tokens": 6})
        assert ask["success"], ask["error"]
        assert [i["question"] for i in ask["result"]["items"]] == [UNICODE_QUESTION, "What colour dominates?"]
        assert all(isinstance(i["answer"], str) for i in ask["result"]["items"])

        explain = serve.run("explain", validate_args(tiny_llava, tmp_path / "e", images[:1], explain=True,
                                                     max_new_tokens=5))
        item = explain["result"]["items"][0]
        assert isinstance(item["reason"], str) and 0.0 <= item["score"] <= 1.0
        assert explain["metrics"]["model_loads"] == 1 and explain["metrics"]["model_cache_hit"] is True
    finally:
        serve.close()


def test_caption_answer_is_one_valid_json_document_on_stdout(tiny_llava, images, tmp_path):
    code, doc = run(VISION, tmp_path, {"images": [str(images[1])], "task": "ask", "question": UNICODE_QUESTION,
                                       "model": str(tiny_llava), "output_dir": str(tmp_path / "o"),
                                       "max_new_tokens": 12})
    assert code == 0 and doc["result"]["items"][0]["question"] == UNICODE_QUESTION
    assert doc["outputs"] == []  # no report asked: nothing written


# --- in-process: batching, the OOM ladder, progress ---------------------------------------------------------------

def _execute(args: dict, cache=None):
    from workers.runtime.cache import ModelCache
    from workers.runtime.engine import execute
    from workers.vision.worker import VisionWorker

    return execute(VisionWorker(), args, cache or ModelCache())


def test_batch_size_never_changes_a_score(tiny_llava, images, tmp_path):
    from workers.runtime.cache import ModelCache

    cache = ModelCache()
    scores = {}
    for batch_size in (1, 2, 3):
        envelope, code = _execute(validate_args(tiny_llava, tmp_path / str(batch_size), images,
                                                batch_size=batch_size), cache)
        assert code == 0, envelope.error
        scores[batch_size] = [item["score"] for item in envelope.result["items"]]
    # the three questions differ in length, so batched rows are left-padded differently
    assert scores[2] == pytest.approx(scores[1], abs=1e-5) and scores[3] == pytest.approx(scores[1], abs=1e-5)


def test_images_are_downscaled_to_max_image_side_before_the_processor(tiny_llava, images, tmp_path, monkeypatch):
    from workers.vision import scoring

    seen = []
    original = scoring._inputs
    monkeypatch.setattr(scoring, "_inputs", lambda model, imgs, qs: seen.extend(i.size for i in imgs)
                        or original(model, imgs, qs))
    envelope, code = _execute(validate_args(tiny_llava, tmp_path / "o", images, max_image_side=100))
    assert code == 0
    assert seen == [(67, 100), (64, 48), (100, 20)]  # aspect kept; the small JPEG is not upscaled
    assert [(i["width"], i["height"]) for i in envelope.result["items"]] == [(200, 300), (64, 48), (2000, 400)]


def test_out_of_memory_halves_the_batch_and_keeps_the_scores(tiny_llava, images, tmp_path, monkeypatch):
    from transformers import LlavaForConditionalGeneration
    from worker_process import OutOfMemoryError

    reference, _ = _execute(validate_args(tiny_llava, tmp_path / "r", images, batch_size=1))
    original = LlavaForConditionalGeneration.forward
    batches = []

    def forward(self, *args, **kwargs):
        batches.append(kwargs["input_ids"].shape[0])
        if len(batches) == 1:
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LlavaForConditionalGeneration, "forward", forward)
    envelope, code = _execute(validate_args(tiny_llava, tmp_path / "o", images, batch_size=3))
    assert code == 0, envelope.error
    assert batches == [3, 1, 1, 1]
    assert envelope.result["memory_rung"] == "smaller_batch" and envelope.result["batch_size"] == 1
    assert "out of memory: batch size lowered to 1" in envelope.warnings
    assert [i["score"] for i in envelope.result["items"]] == pytest.approx(
        [i["score"] for i in reference.result["items"]], abs=1e-5)


def test_one_progress_event_per_image(tiny_llava, images, tmp_path, capfd):
    envelope, code = _execute(validate_args(tiny_llava, tmp_path / "o", images, batch_size=2))
    assert code == 0
    events = [json.loads(line) for line in capfd.readouterr().err.splitlines()
              if line.startswith('{"event":"progress"')]
    done = [e for e in events if e["message"] == "image done"]
    assert [e["index"] for e in done] == [0, 1, 2]
    assert [e["fraction"] for e in done] == pytest.approx([1 / 3, 2 / 3, 1.0], abs=1e-4)  # rounded to 4 places
    assert [e["score"] for e in done] == [i["score"] for i in envelope.result["items"]]


# --- yes/no tokens -------------------------------------------------------------------------------------------------

class _Tokenizer:
    """encode() from a fixed table; ids are positions in `pieces`."""

    def __init__(self, table: dict[str, list[str]]):
        self.pieces = sorted({p for ps in table.values() for p in ps})
        self.table = table

    def encode(self, text, add_special_tokens=False):
        return [self.pieces.index(p) for p in self.table[text]]

    def convert_ids_to_tokens(self, ids):
        return [self.pieces[i] for i in ids]

    def get_vocab(self):
        return {piece: i for i, piece in enumerate(self.pieces)}


def test_answer_tokens_prefer_whole_words_and_fall_back_to_distinct_first_pieces():
    from workers.vision.llava import answer_tokens

    words = [w for base in ("Yes", "yes", "YES", "No", "no", "NO") for w in (base, " " + base)]
    llama = {w: (["▁" + w.strip()] if w.strip() in ("Yes", "yes", "No", "no") else ["▁" + w.strip()[:1], "ES"])
             for w in words}
    llama.update({" " + w: ["▁", "▁" + w] for w in ("Yes", "yes", "No", "no")})
    llama.update({"NO": ["▁NO"], " NO": ["▁", "▁NO"]})
    llama["YES"] = llama[" YES"] = ["▁Y", "ES"]
    llama["Yo"] = ["▁YES"]  # in the vocabulary, though no variant encodes to it
    tokens = answer_tokens(_Tokenizer(llama))
    assert tokens.whole_words
    assert tokens.yes_tokens == ["▁Yes", "▁yes", "▁YES"] and tokens.no_tokens == ["▁No", "▁no", "▁NO"]

    pieces = {w: ([" "] if w.startswith(" ") else []) + list(w.strip()) for w in words}
    tokens = answer_tokens(_Tokenizer(pieces))
    assert not tokens.whole_words  # " " starts every spaced variant: it tells nothing and is dropped
    assert tokens.yes_tokens == ["Y", "y"] and tokens.no_tokens == ["N", "n"]


# --- bad input: exit 2 before torch, nothing written; missing model: exit 3 ---------------------------------------

@pytest.mark.parametrize("case, path, text", [
    ("missing_image", "$.images[0].path", "does not exist"),
    ("corrupt_image", "$.images[0]", "does not decode as an image"),
    ("empty_list", "$.images", ""),
    ("validate_without_expected", "$.images[0]", "`validate` needs `expected`"),
    ("unknown_task", "$.task", ""),
    ("ask_without_question", "$.images[0]", "`ask` needs a `question`"),
    ("template_without_placeholder", "$.validate_template", "{expected}"),
    ("threshold_above_1", "$.threshold", ""),
])
def test_bad_input_is_invalid_input_with_exit_2_before_torch(tmp_path, images, case, path, text):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    good = {"path": str(images[1]), "expected": "a cat"}
    fields = {
        "missing_image": {"images": [{"path": str(tmp_path / "nope.png"), "expected": "a cat"}]},
        "corrupt_image": {"images": [str(corrupt)], "task": "caption"},
        "empty_list": {"images": []},
        "validate_without_expected": {"images": [str(images[1])]},
        "unknown_task": {"task": "grade"},
        "ask_without_question": {"images": [str(images[1])], "task": "ask"},
        "template_without_placeholder": {"validate_template": "Is this good?"},
        "threshold_above_1": {"threshold": 1.5},
    }[case]
    args = {"images": [good], "model": str(tmp_path / "no-model"), "output_dir": str(tmp_path / "out"), **fields}
    (tmp_path / "args.json").write_text(json.dumps(args), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-X", "importtime", *VISION[1:], "--input", str(tmp_path / "args.json")],
                          capture_output=True, cwd=REPO, timeout=120)
    doc = json.loads(proc.stdout)
    assert proc.returncode == 2 and doc["error"]["kind"] == "invalid_input", doc["error"]
    assert path in paths(doc) and text in doc["error"]["message"]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.decode().splitlines() if "|" in line}
    assert "pydantic" in imported and not imported & {"torch", "transformers"}
    assert not (tmp_path / "out").exists()


def test_a_missing_or_foreign_model_is_model_unavailable(tmp_path, images):
    foreign = tmp_path / "bert"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"model_type": "bert"}))
    for model, text in ((tmp_path / "nope", "does not exist"), (foreign, "'bert' checkpoint")):
        code, doc = run(VISION, tmp_path, {"images": [str(images[1])], "task": "caption", "model": str(model),
                                           "output_dir": str(tmp_path / "out")})
        assert code == 3 and doc["error"]["kind"] == "model_unavailable" and text in doc["error"]["message"]
        assert not (tmp_path / "out").exists()


# --- review fixes: control tokens in text, broken weights, the warm key, explain's question, EXIF, overflow --------

def test_a_control_token_in_user_text_is_invalid_input_not_a_crash(tiny_llava, images, tmp_path):
    args = validate_args(tiny_llava, tmp_path / "o", images[:2])
    args["images"][1]["expected"] = "a <image> of a fox"
    envelope, code = _execute(args)
    assert code == 2 and envelope.error.kind == "invalid_input"
    assert [e["path"] for e in envelope.error.details["field_errors"]] == ["$.images[1].expected"]
    assert "'<image>'" in envelope.error.message and not (tmp_path / "o").exists()


@pytest.mark.parametrize("damage", ["truncated_weights", "mismatched_config"])
def test_damaged_weights_are_model_unavailable(tiny_llava, images, tmp_path, damage):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_llava, broken)
    if damage == "truncated_weights":
        with open(broken / "model.safetensors", "r+b") as f:
            f.truncate(1000)
    else:
        config = json.loads((broken / "config.json").read_text())
        config["text_config"]["hidden_size"] = 64
        (broken / "config.json").write_text(json.dumps(config))
    envelope, code = _execute({"images": [str(images[1])], "task": "caption", "model": str(broken),
                               "output_dir": str(tmp_path / "o")})
    assert code == 3 and envelope.error.kind == "model_unavailable", envelope.error
    assert "cannot load" in envelope.error.message


def test_equivalent_device_and_dtype_spellings_share_one_loaded_model(tiny_llava, images, tmp_path):
    from workers.runtime.cache import ModelCache

    cache = ModelCache()
    hits = []
    for device, dtype in (("cpu", "auto"), ("auto", "auto"), ("cpu", "float32"), ("auto", "float32")):
        envelope, code = _execute({"images": [str(images[1])], "task": "caption", "model": str(tiny_llava),
                                   "output_dir": str(tmp_path / f"{device}-{dtype}"), "max_new_tokens": 2,
                                   "device": device, "dtype": dtype}, cache)
        assert code == 0, envelope.error
        hits.append(envelope.metrics.model_cache_hit)
    assert hits == [False, True, True, True]


def test_explain_asks_the_templates_question_at_length(tiny_llava, images, tmp_path, monkeypatch):
    from workers.vision import scoring

    asked = []
    monkeypatch.setattr(scoring, "generate", lambda model, imgs, questions, n: asked.extend(questions)
                        or ["because"] * len(questions))
    args = validate_args(tiny_llava, tmp_path / "o", images[1:2], explain=True,
                         validate_template="Is {expected} clearly visible? Answer the question using a single word "
                                           "or phrase.")
    envelope, code = _execute(args)
    assert code == 0 and envelope.result["items"][0]["reason"] == "because"
    assert asked == ["Is a red fox standing in deep snow at sunset clearly visible? Answer yes or no, then give the "
                     "reason in one sentence."]


def test_exif_orientation_is_applied_before_the_model_sees_the_image(tiny_llava, tmp_path):
    from PIL import Image

    photo = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    Image.new("RGB", (64, 48), (10, 200, 10)).save(photo, exif=exif)
    envelope, code = _execute({"images": [str(photo)], "task": "caption", "model": str(tiny_llava),
                               "output_dir": str(tmp_path / "o"), "max_new_tokens": 2})
    assert code == 0
    item = envelope.result["items"][0]
    assert (item["width"], item["height"]) == (48, 64)


def test_non_finite_logits_are_a_clear_error_not_a_schema_crash(tiny_llava, images, tmp_path, monkeypatch):
    import torch
    from transformers import LlavaForConditionalGeneration

    original = LlavaForConditionalGeneration.forward

    def overflowing(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        out.logits = torch.full_like(out.logits, float("nan"))
        return out

    monkeypatch.setattr(LlavaForConditionalGeneration, "forward", overflowing)
    envelope, code = _execute(validate_args(tiny_llava, tmp_path / "o", images[:1]))
    assert code == 7 and envelope.error.kind == "internal" and "bfloat16 or float32" in envelope.error.message


def test_llava_next_any_resolution_batches_images_of_different_token_counts(tmp_path, images):
    """LLaVA-NeXT (`llava_next`) through the same code: `image_sizes` passes, and a tall and a small image (different
    tile grids, so different numbers of image tokens) score the same alone and batched."""
    from workers.runtime.cache import ModelCache
    from workers.tiny import build_vision_next

    model = build_vision_next(tmp_path / "next")
    cache = ModelCache()
    scores = {}
    for batch_size in (1, 2):
        envelope, code = _execute(validate_args(model, tmp_path / str(batch_size), images[:2], batch_size=batch_size,
                                                explain=True, max_new_tokens=3), cache)
        assert code == 0, envelope.error
        assert envelope.result["model_type"] == "llava_next"
        scores[batch_size] = [item["score"] for item in envelope.result["items"]]
    assert scores[1][0] != scores[1][1]
    assert scores[2] == pytest.approx(scores[1], abs=1e-5)
