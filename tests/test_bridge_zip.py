"""Zipped foreach: item i of `foreach: {NAME: LIST, ...}` holds each list's i-th element; lists of different
lengths fail the step; one streamed list makes the step follow that foreach step item by item."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bridge_helpers import events, run_runner, schema_dir, state_rows, trace, write_manifest
from test_bridge_concurrency import jobs_log, pool_manifest

from bridge.cli import main
from bridge.manifest import ManifestInvalid, load
from bridge.runner import EXIT_OK, EXIT_STEP_FAILED

SCENES = [{"d": 1}, {"d": 2}, {"d": 3}]


@pytest.fixture
def schemas(tmp_path: Path) -> Path:
    return schema_dir(tmp_path)


def zip_manifest(log: Path, scenes: list, frame_list: str = "scenes", sleep_s: float = 0.0) -> dict:
    common = {"log_file": str(log), "sleep_s": sleep_s}
    return pool_manifest([
        {"id": "scenes", "worker": "pool", "args": {"items": scenes}},
        {"id": "short", "worker": "pool", "args": {"items": scenes[:-1]}},
        {"id": "frames", "worker": "pool", "foreach": f"${{steps.{frame_list}.result.items}}",
         "ignore_input_files": ["log_file"], "args": {"tag": {"frame": "${item.d}"}, **common}},
        {"id": "clips", "worker": "pool", "ignore_input_files": ["log_file"],
         "foreach": {"scene": "${steps.scenes.result.items}", "frame": "${steps.frames.result}"},
         "args": {"tag": {"clip": "${item.scene.d}", "of": "${item.frame.tag.frame}"}, **common}},
        {"id": "all", "worker": "pool", "args": {"items": "${steps.clips.result.*.tag}"}},
    ])


def _tags(log: Path) -> list:
    return [j["tag"] for j in jobs_log(log)]


def test_zipped_items_stream_resume_cached_and_reuse_moved_items(tmp_path, schemas):
    log, work = tmp_path / "jobs.log", tmp_path / "t.work"
    m = write_manifest(tmp_path, zip_manifest(log, SCENES, sleep_s=0.3))
    code, out, _ = run_runner(m, schemas, jobs=2)
    assert code == EXIT_OK, out
    clip_tags = [{"clip": d, "of": d} for d in (1, 2, 3)]
    assert [it["tag"] for it in committed_results(work, "clips")] == clip_tags
    assert committed_results(work, "all")["items"] == clip_tags  # `*` over the foreach step's item results
    evs = events(work)
    assert next(e for e in evs if e["event"] == "foreach_start" and e["step"] == "clips")["streaming_from"] == "frames"
    clip0_start = next(e["ts"] for e in evs if e["event"] == "attempt_start" and e["step"] == "clips"
                       and e.get("item") == 0)
    frame2_end = next(e["ts"] for e in evs if e["event"] == "attempt_end" and e["step"] == "frames"
                      and e.get("item") == 2)
    assert clip0_start < frame2_end  # clips[0] did not wait for all of frames

    log.unlink()
    code, out, _ = run_runner(m, schemas, jobs=2)
    assert code == EXIT_OK and not log.exists(), out  # resume: all cached
    assert trace(work)["steps"]["clips"]["status"] == "cached"

    m = write_manifest(tmp_path, zip_manifest(log, [{"d": 0}, *SCENES], sleep_s=0.3))  # a scene inserted at the front
    code, out, _ = run_runner(m, schemas, jobs=2)
    assert code == EXIT_OK, out
    assert _tags(log) == [{"frame": 0}, {"clip": 0, "of": 0}]  # moved frames and the clips that follow: reused
    assert [it["tag"] for it in committed_results(work, "clips")] == [{"clip": 0, "of": 0}, *clip_tags]


def committed_results(work: Path, step: str):
    """The committed result of a step, or of each of its items in order."""
    rows = state_rows(work, f"SELECT item, result FROM steps WHERE step_id='{step}' ORDER BY item")
    results = [json.loads(r) for _, r in rows]
    return results[0] if len(rows) == 1 and rows[0][0] < 0 else results


@pytest.mark.parametrize("streaming", [True, False])
def test_zipped_lists_of_different_lengths_fail_the_step_giving_each_length(tmp_path, schemas, streaming):
    log, work = tmp_path / "jobs.log", tmp_path / "t.work"
    doc = zip_manifest(log, SCENES, frame_list="short")
    if not streaming:
        doc["steps"][3]["foreach"]["frame"] = "${steps.short.result.items}"
    code, out, runner = run_runner(write_manifest(tmp_path, doc), schemas, jobs=2)
    assert code == EXIT_STEP_FAILED, out
    assert runner.m.stream_from.get("clips") == ("frames" if streaming else None)
    clips = trace(work)["steps"]["clips"]
    assert clips["status"] == "failed" and clips["error"]["kind"] == "invalid_reference"
    assert "scene has 3, frame has 2" in clips["error"]["message"]
    assert not [t for t in _tags(log) if "clip" in t]


def test_zipped_foreach_is_validated_like_a_plain_one(tmp_path, capsys):
    doc = zip_manifest(tmp_path / "log", SCENES)
    clips = doc["steps"][3]
    clips["foreach"]["extra"] = "${steps.nope.result}"
    clips["foreach"]["self"] = "${steps.clips.result}"
    clips["args"]["bad"] = "${item.keyframe}"
    doc["steps"][4]["foreach"] = {"bad-name": "${steps.scenes.result.items}"}
    doc["steps"].append({"id": "many", "worker": "pool",
                         "foreach": {f"l{i}": "${steps.scenes.result.items}" for i in range(9)}})
    m = write_manifest(tmp_path, doc)
    assert main(["validate", str(m), "--json"]) == 2
    errors = {(e["path"], e["type"]) for e in json.loads(capsys.readouterr().out)["errors"]}
    assert {("$.steps[3].foreach.extra", "unknown_step"), ("$.steps[3].foreach.self", "self_reference"),
            ("$.steps[3].args.bad", "unknown_item_field")} <= errors
    assert {("$.steps[4].foreach['bad-name']['[key]']", "string_pattern_mismatch"),
            ("$.steps[5].foreach", "too_long")} <= errors  # a bad name, 9 lists


def test_streaming_needs_exactly_one_whole_foreach_list(tmp_path):
    doc = zip_manifest(tmp_path / "log", SCENES)
    assert load(write_manifest(tmp_path, doc)).stream_from == {"clips": "frames"}
    doc["steps"][3]["foreach"]["again"] = "${steps.frames.result.*.tag}"  # another list needs all of frames
    assert load(write_manifest(tmp_path, doc)).stream_from == {}
    del doc["steps"][3]["foreach"]["again"]
    doc["steps"][3]["foreach"]["scene"] = "${steps.frames.result}"  # two whole foreach lists
    doc["steps"][3]["foreach"]["frame2"] = "${steps.clips_src.result}"
    doc["steps"].insert(3, {"id": "clips_src", "worker": "pool", "foreach": "${steps.scenes.result.items}"})
    assert load(write_manifest(tmp_path, doc)).stream_from == {}
    with pytest.raises(ManifestInvalid):
        doc["steps"][4]["foreach"] = {}
        load(write_manifest(tmp_path, doc))
