"""`python -m bridge validate`: every problem at once, with JSON paths, exit 2, never a traceback."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from bridge_helpers import REPO, bridge_env, fixture_manifest, schema_dir, write_manifest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge import refs
from bridge.cli import main
from bridge.manifest import Manifest, ManifestInvalid, load
from bridge.schemas import SchemaStore, path_in_schema

VALID = fixture_manifest([
    {"id": "a", "worker": "fixture", "args": {"outputs": {"o": "x"}}},
    {"id": "b", "worker": "fixture", "args": {"echo": "${steps.a.result.files.o}"}, "needs": ["a"]},
])


def problems(tmp_path: Path, doc) -> list[dict]:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ManifestInvalid) as info:
        load(path)
    return [p.as_dict() for p in info.value.problems]


def test_valid_manifest(tmp_path, capsys):
    m = write_manifest(tmp_path, VALID)
    assert main(["validate", str(m)]) == 0
    assert "order a -> b" in capsys.readouterr().out
    loaded = load(m)
    assert loaded.workdir == tmp_path / "t.work" and loaded.deps == {"a": [], "b": ["a"]}


def test_all_problems_reported_at_once_with_json_paths(tmp_path, capsys):
    doc = fixture_manifest([
        {"id": "a", "worker": "fixture", "args": {"x": "${steps.c.result.y}"}, "needs": ["b"]},
        {"id": "b", "worker": "fixture", "args": {"x": "${steps.a.result}", "output_dir": "/tmp/x"}},
        {"id": "a", "worker": "fixture", "args": {"note": "see ${steps.b.result.z}"}, "needs": ["zzz"]},
        {"id": "d", "worker": "fixture", "timeout_s": -1, "retry": {"max_attempts": 0, "retry_on": ["invalid_input"]}},
    ], extra_field=1)
    found = {(p["path"], p["type"]) for p in problems(tmp_path, doc)}
    assert {
        ("$.extra_field", "extra_forbidden"),
        ("$.steps[3].timeout_s", "greater_than"),
        ("$.steps[3].retry.max_attempts", "greater_than_equal"),
        ("$.steps[3].retry.retry_on[0]", "literal_error"),
        ("$.steps[2].id", "duplicate_id"),
        ("$.steps[2].needs[0]", "unknown_step"),
        ("$.steps[0].args.x", "unknown_step"),
        ("$.steps[1].args.output_dir", "runner_owned"),
        ("$.steps[2].args.note", "bad_reference"),
        ("$.steps[0]", "cycle"),
    } <= found
    m = write_manifest(tmp_path, doc)
    assert main(["validate", str(m), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and len(report["errors"]) >= 10


def test_result_paths_checked_against_a_result_schema(tmp_path):
    store_dir = tmp_path / "schemas"
    store_dir.mkdir()
    (store_dir / "fixture.result.schema.json").write_text(json.dumps({
        "type": "object", "properties": {"files": {"type": "object", "additionalProperties": {"type": "string"}},
                                         "segments": {"type": "array", "items": {"$ref": "#/$defs/Seg"}}},
        "$defs": {"Seg": {"type": "object", "properties": {"text": {"type": "string"}}}}}))
    doc = fixture_manifest([
        {"id": "a", "worker": "fixture"},
        {"id": "b", "worker": "fixture", "args": {"ok1": "${steps.a.result.files.anything}",
                                                  "ok2": "${steps.a.result.segments.0.text}",
                                                  "bad1": "${steps.a.result.nope}",
                                                  "bad2": "${steps.a.result.segments.0.text.deeper}"}},
    ])
    path = write_manifest(tmp_path, doc)
    with pytest.raises(ManifestInvalid) as info:
        load(path, SchemaStore(store_dir))
    bad = {p.path for p in info.value.problems if p.type == "unknown_result_path"}
    assert bad == {"$.steps[1].args.bad1", "$.steps[1].args.bad2"}


def test_path_in_schema_and_refs():
    schema = {"type": "object", "properties": {"a": {"anyOf": [{"type": "null"}, {"type": "array", "items": {}}]}}}
    assert path_in_schema(schema, ("a", 3)) is None
    assert "no field 'b'" in path_in_schema(schema, ("b",))
    ref = refs.parse("${steps.s1.result.x.0.y}")
    assert ref and ref.step == "s1" and ref.path == ("x", 0, "y")
    assert refs.resolve({"k": ["${steps.s1.result.x.0.y}", "plain"]}, {"s1": {"x": [{"y": {"z": 1}}]}}) == \
        {"k": [{"z": 1}, "plain"]}
    with pytest.raises(refs.RefError, match="out of range"):
        refs.resolve("${steps.s1.result.x.5}", {"s1": {"x": []}})


def test_a_star_segment_maps_the_rest_of_the_path_over_a_list():
    result = {"clips": [{"path": "a.mp4", "tags": [{"n": 1}]}, {"path": "b.mp4", "tags": [{"n": 2}, {"n": 3}]}]}
    assert refs.resolve("${steps.s.result.clips.*.path}", {"s": result}) == ["a.mp4", "b.mp4"]
    assert refs.resolve("${steps.s.result.clips.*.tags.*.n}", {"s": result}) == [[1], [2, 3]]
    assert refs.resolve("${steps.s.result.*.path}", {"s": result["clips"]}) == ["a.mp4", "b.mp4"]  # a foreach's list
    assert refs.resolve("${steps.s.result.*}", {"s": []}) == []
    with pytest.raises(refs.RefError, match="'\\*' needs a list at 'clips.0.path.\\*', got str"):
        refs.resolve("${steps.s.result.clips.*.path.*}", {"s": result})
    with pytest.raises(refs.RefError, match="has no field 'clips.1.tags.0.m'"):  # names the item that lacks it
        refs.resolve("${steps.s.result.clips.*.tags.*.m}", {"s": {"clips": [{"tags": []}, {"tags": [{"n": 1}]}]}})
    schema = {"type": "object", "properties": {"segs": {"type": "array", "items": {"$ref": "#/$defs/S"}},
                                               "name": {"type": "string"}},
              "$defs": {"S": {"type": "object", "properties": {"text": {"type": "string"}}}}}
    assert path_in_schema(schema, ("segs", "*", "text")) is None
    assert "no field 'segs.*.nope'" in path_in_schema(schema, ("segs", "*", "nope"))
    assert "'name' is string, not an array" in path_in_schema(schema, ("name", "*"))
    assert "'result' is object, not an array" in path_in_schema(schema, ("*",))


def test_star_paths_are_validated_against_result_schemas_and_foreach_lists(tmp_path):
    store_dir = tmp_path / "schemas"
    store_dir.mkdir()
    (store_dir / "fixture.result.schema.json").write_text(json.dumps({
        "type": "object", "properties": {"segments": {"type": "array", "items": {"type": "object", "properties": {
            "text": {"type": "string"}}}}, "mode": {"type": "string"}}}))
    doc = fixture_manifest([
        {"id": "a", "worker": "fixture"},
        {"id": "each", "worker": "fixture", "foreach": "${steps.a.result.segments}"},
        {"id": "b", "worker": "fixture", "args": {"ok1": "${steps.a.result.segments.*.text}",
                                                  "ok2": "${steps.each.result.*.mode}",
                                                  "ok3": "${steps.each.result.0.segments.*.text}",
                                                  "bad1": "${steps.a.result.mode.*}",
                                                  "bad2": "${steps.a.result.segments.*.nope}",
                                                  "bad3": "${steps.each.result.mode}",
                                                  "bad4": "${steps.each.result.*.nope}"}},
    ])
    with pytest.raises(ManifestInvalid) as info:
        load(write_manifest(tmp_path, doc), SchemaStore(store_dir))
    bad = {p.path: p.message for p in info.value.problems if p.type == "unknown_result_path"}
    assert set(bad) == {f"$.steps[2].args.bad{i}" for i in (1, 2, 3, 4)}
    assert "'*' needs an array" in bad["$.steps[2].args.bad1"] and "map over it (`.*`)" in bad["$.steps[2].args.bad3"]


def test_generated_manifest_schema_is_committed_when_present():
    committed = REPO / "schemas" / "manifest.schema.json"
    if not committed.exists():
        pytest.skip("schemas/manifest.schema.json not generated yet")
    assert json.loads(committed.read_text())["properties"].keys() >= Manifest.model_json_schema()["properties"].keys()


# ------------------------------------------------------------------------------------------ hypothesis
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


def _mutations(doc: dict) -> list:
    """Edits that each make VALID invalid."""
    out = []
    for key in ("version", "name", "steps"):
        d = copy.deepcopy(doc)
        del d[key]
        out.append(d)
    d = copy.deepcopy(doc)
    d["steps"][1]["id"] = "a"
    out.append(d)
    d = copy.deepcopy(doc)
    d["steps"][0]["needs"] = ["b"]
    out.append(d)
    d = copy.deepcopy(doc)
    d["steps"][1]["args"]["echo"] = "${steps.nope.result}"
    out.append(d)
    d = copy.deepcopy(doc)
    d["steps"][0]["args"]["output_dir"] = "x"
    out.append(d)
    d = copy.deepcopy(doc)
    d["steps"] = []
    out.append(d)
    return out


@st.composite
def broken_manifests(draw):
    base = draw(st.sampled_from(_mutations(VALID)))
    # then scribble a random value over a random top-level or step field
    if draw(st.booleans()) and isinstance(base.get("steps"), list) and base["steps"]:
        i = draw(st.integers(0, len(base["steps"]) - 1))
        field = draw(st.sampled_from(["id", "worker", "args", "needs", "retry", "timeout_s", "optional", "zz"]))
        base["steps"][i][field] = draw(json_values)
    elif draw(st.booleans()):
        field = draw(st.sampled_from(["version", "name", "workdir", "defaults", "workers", "steps", "zz"]))
        base[field] = draw(json_values)
    return base


def _validate_in_process(tmp_path: Path, text: str, capsys) -> tuple[int, str]:
    path = tmp_path / "h.manifest.json"
    path.write_text(text, encoding="utf-8")
    code = main(["validate", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=json_values)
def test_random_json_is_rejected_cleanly(tmp_path, capsys, doc):
    code, text = _validate_in_process(tmp_path, json.dumps(doc), capsys)
    assert code == 2 and "invalid manifest" in text and "Traceback" not in text


@pytest.mark.parametrize("index", range(len(_mutations(VALID))))
def test_each_mutation_alone_is_rejected(tmp_path, capsys, index):
    code, text = _validate_in_process(tmp_path, json.dumps(_mutations(VALID)[index]), capsys)
    assert code == 2 and "$" in text and "Traceback" not in text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=broken_manifests())
def test_mutated_manifests_are_rejected_cleanly(tmp_path, capsys, doc):
    code, text = _validate_in_process(tmp_path, json.dumps(doc), capsys)
    assert "Traceback" not in text
    if code == 0:
        # A scribble can repair a mutation (e.g. replace the bad args with valid ones); then the document
        # must really be valid, checked independently against the committed JSON schema.
        schema = json.loads((REPO / "schemas" / "manifest.schema.json").read_text("utf-8"))
        jsonschema.Draft202012Validator(schema).validate(doc)
    else:
        assert code == 2 and "$" in text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=40) | st.just(b"[" * 5000) | st.just(b'{"version": NaN}') | st.just(b"1e400"))
def test_non_json_bytes_are_rejected_cleanly(tmp_path, capsys, raw):
    path = tmp_path / "b.manifest.json"
    path.write_bytes(raw)
    code = main(["validate", str(path)])
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.out + captured.err


def test_validate_as_a_subprocess(tmp_path):
    bad = write_manifest(tmp_path, {"version": 2, "steps": [{"id": "a b"}]})
    res = subprocess.run([sys.executable, "-m", "bridge", "validate", str(bad)], cwd=REPO, capture_output=True,
                         text=True, env=bridge_env(schema_dir(tmp_path)), timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "$.version" in res.stderr and "$.name" in res.stderr and "$.steps[0].id" in res.stderr
    missing = subprocess.run([sys.executable, "-m", "bridge", "run", str(tmp_path / "nope.json")], cwd=REPO,
                             capture_output=True, text=True, env=bridge_env(schema_dir(tmp_path)), timeout=60)
    assert missing.returncode == 2 and "cannot read" in missing.stderr
