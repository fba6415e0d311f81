"""In-process unit tests of the runtime's small parts (no subprocess)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.contract import ErrorKind, check_file_name
from workers.runtime.cache import ModelCache
from workers.runtime.errors import InvalidInput, ResourceExhausted, classify_exception
from workers.runtime.outputs import OutputStage
from workers.runtime.paths import contained
from workers.runtime.validation import json_path


def test_json_path_from_pydantic_locations():
    assert json_path(()) == "$"
    assert json_path(("formats", 1)) == "$.formats[1]"
    assert json_path(("segments", 0, "words", 2, "start")) == "$.segments[0].words[2].start"


class OutOfMemoryError(RuntimeError):  # same name as torch.cuda.OutOfMemoryError
    pass


@pytest.mark.parametrize("exc, kind", [
    (MemoryError(), ErrorKind.resource),
    (OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), ErrorKind.resource),
    (RuntimeError("CUDA error: out of memory"), ErrorKind.resource),
    (OSError(errno.ENOSPC, "No space left on device"), ErrorKind.resource),
    (RuntimeError("mkl_malloc: failed to allocate memory"), ErrorKind.resource),
    (RuntimeError("std::bad_alloc"), ErrorKind.resource),
    (RuntimeError("could not create a memory object"), ErrorKind.resource),
    (RuntimeError("CUDA failed with error out of memory"), ErrorKind.resource),  # CTranslate2
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"), ErrorKind.resource),
    (OSError(errno.ENOMEM, "Cannot allocate memory"), ErrorKind.resource),
    (ImportError("IMPORTANT: ...\nOriginal error was: libopenblas.so: failed to map segment from shared object"),
     ErrorKind.resource),
    (KeyError("x"), ErrorKind.internal),
    (RuntimeError("Unsupported model binary version"), ErrorKind.internal),
    (InvalidInput("bad"), ErrorKind.invalid_input),
])
def test_classify_exception(exc, kind):
    err = classify_exception(exc)
    assert err.kind == kind
    assert ("traceback" in err.details) is (kind == ErrorKind.internal and not isinstance(exc, InvalidInput))


def _wrapped(outer: Exception, inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except Exception:
            raise outer from None  # how worker code hides the cause; the context is still there
    except Exception as exc:
        return exc


def test_an_allocation_failure_wrapped_as_model_unavailable_is_still_resource():
    from workers.runtime.errors import ModelUnavailable

    hidden = _wrapped(ModelUnavailable("model could not be loaded"), RuntimeError("mkl_malloc: failed to allocate memory"))
    err = classify_exception(hidden, "loading the model")
    assert err.kind == ErrorKind.resource and err.retryable and err.details["stage"] == "loading the model"
    assert "mkl_malloc" in err.message
    deliberate = _wrapped(InvalidInput("image too large for max_image_side"), MemoryError())
    assert classify_exception(deliberate).kind == ErrorKind.invalid_input  # a worker's own verdict stands


def test_invalid_input_always_has_field_errors():
    assert InvalidInput("bad").details["field_errors"] == [{"path": "$", "message": "bad", "type": "invalid"}]
    one = InvalidInput.for_field("audio_path", "audio_path 'x' does not exist", type_="bad_file", detail="does not exist")
    assert one.message == "audio_path 'x' does not exist"
    assert one.details["field_errors"] == [{"path": "$.audio_path", "message": "does not exist", "type": "bad_file"}]
    assert InvalidInput.for_field("$.images[2].path", "no").details["field_errors"][0]["path"] == "$.images[2].path"


def test_json_path_quotes_keys_that_are_not_identifiers():
    assert json_path(("odd key", 0, "x")) == "$['odd key'][0].x"


def test_model_cache_keeps_one_model_and_evicts_the_old_one_first():
    evicted, events = [], []
    cache = ModelCache(capacity=1, on_evict=lambda m: evicted.append(m))

    def loader(name):
        def load():
            events.append(("load", name, list(evicted)))
            return name
        return load

    assert cache.get_or_load("a", loader("a")) == ("a", False)
    assert cache.get_or_load("a", loader("a")) == ("a", True)
    assert cache.get_or_load("b", loader("b")) == ("b", False)
    assert events[-1] == ("load", "b", ["a"])  # "a" was released before "b" was loaded
    assert cache.loads == 2 and cache.keys() == ["b"]


def test_an_evicted_model_is_gone_before_the_next_one_loads():
    import gc
    import weakref

    class Model:
        pass

    cache = ModelCache(capacity=1)
    first, _ = cache.get_or_load("a", Model)
    alive = weakref.ref(first)
    del first

    def load_second():
        gc.collect()
        assert alive() is None, "the evicted model was still referenced while the next one loaded"
        return Model()

    cache.get_or_load("b", load_second)


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".", "a\\b", "c:evil", "x\x00y", " lead", ""])
def test_check_file_name_rejects_paths(name):
    with pytest.raises(ValueError):
        check_file_name(name)


@given(st.text(min_size=1, max_size=40))
def test_contained_never_escapes(tmp_path_factory, name):
    base = tmp_path_factory.getbasetemp() / "base"
    try:
        target = contained(base, name)
    except (InvalidInput, ValueError, OSError):
        return
    assert base.resolve() in target.parents


def test_output_stage_discards_everything_on_failure(tmp_path):
    out = tmp_path / "new"
    stage = OutputStage(out)
    stage.path("a.txt").write_text("partial")
    stage.discard()
    assert not out.exists()

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    stage = OutputStage(existing)
    stage.path("b.txt").write_text("partial")
    stage.discard()
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]


def test_output_stage_commit_moves_files_and_hashes(tmp_path):
    stage = OutputStage(tmp_path / "o")
    stage.path("sub.srt").write_text("1\n")
    stage.path("declared-but-unwritten.txt")
    outputs = stage.commit()
    assert [Path(o.path).name for o in outputs] == ["sub.srt"]
    assert outputs[0].media_type == "application/x-subrip" and outputs[0].bytes == 2
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["sub.srt"]


def test_schema_errors_point_inside_union_branches_and_list_every_problem():
    from pydantic import BaseModel, Field

    from workers.contract import ARGS_CONFIG, WorkerArgs, file_name_field
    from workers.runtime.validation import validate_document

    class Item(BaseModel):
        model_config = ARGS_CONFIG
        prompt: str = Field(pattern="[^ ]")
        name: str | None = file_name_field(default=None)

    class Args(WorkerArgs):
        items: list[Item | str]
        side: int | None = Field(default=None, multiple_of=8)

    doc = {"output_dir": "o", "items": ["ok", {"prompt": " ", "name": "a/b", "typo": 1}, 5], "side": 100}
    with pytest.raises(InvalidInput) as caught:
        validate_document(Args, doc, "t")
    errors = {e["path"]: e for e in caught.value.details["field_errors"]}
    assert set(errors) == {"$.items[1].prompt", "$.items[1].name", "$.items[1].typo", "$.items[2]", "$.side"}
    assert "plain file name" in errors["$.items[1].name"]["message"]
    assert errors["$.items[2]"]["message"] == "5 is not of type 'object' or 'string'"
    assert errors["$.side"]["message"].endswith("the nearest valid values are 96 and 104")


def test_oom_ladder_climbs_rungs_in_order_and_gives_up_as_resource():
    from workers.runtime.oom_ladder import MemoryLadder

    applied, warnings, calls = [], [], []

    def generate(chunk):
        calls.append(len(chunk))
        if len(calls) <= 5:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return [x * 10 for x in chunk]

    ladder = MemoryLadder(("vae_tiling", "smaller_batch", "model_offload", "sequential_offload"), batch_size=4,
                          accelerator=True, apply=applied.append, warn=warnings.append)
    assert ladder.run([1, 2, 3, 4], generate) == [10, 20, 30, 40]
    assert calls == [4, 4, 2, 1, 1, 1, 1, 1, 1]  # tiling, halve, halve, offload, sequential, then it fits
    assert applied == ["vae_tiling", "model_offload", "sequential_offload"] and ladder.rung == "sequential_offload"
    assert len(warnings) == 5

    cpu = MemoryLadder(("vae_tiling", "model_offload"), accelerator=False, apply=applied.append, warn=warnings.append)
    with pytest.raises(ResourceExhausted):
        cpu.run([1], lambda chunk: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(KeyError):  # anything but an allocation failure propagates untouched
        cpu.run([1], lambda chunk: {}["missing"])


@pytest.mark.parametrize("mode, expected_box", [("cover", (10, 10)), ("contain", (10, 10)), ("stretch", (10, 10))])
def test_fit_gives_the_delivery_size_in_every_mode(mode, expected_box):
    from PIL import Image

    from workers.runtime.imaging import fit

    class Size:
        width, height = 10, 10

    image = Image.new("RGB", (40, 20), (255, 0, 0))
    fitted = fit(image, Size(), mode)
    assert fitted.size == expected_box
    corner = fitted.getpixel((0, 0))
    assert (corner == (0, 0, 0)) is (mode == "contain")  # only contain pads with black bars
