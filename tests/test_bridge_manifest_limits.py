"""Input that used to pass `validate` and then crash `run` (issue 9: D2, D3, duplicate keys), and the cost of
validating a large manifest."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from bridge_helpers import bare_manifest, run_runner, schema_dir, write_manifest

from bridge import refs
from bridge.cli import main
from bridge.jsondoc import MAX_NESTING
from bridge.manifest import ManifestInvalid, load
from bridge.manifest_checks import topological_order
from bridge.runner import EXIT_OK


@pytest.fixture
def schemas(tmp_path_factory) -> Path:
    return schema_dir(tmp_path_factory.mktemp("schemas"))


def nested(depth: int, leaf: object = "x") -> object:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def problems_of(tmp_path: Path, text: str) -> list[dict]:
    path = tmp_path / "m.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ManifestInvalid) as info:
        load(path)
    return [p.as_dict() for p in info.value.problems]


@pytest.mark.parametrize("depth", [MAX_NESTING, 600, 900])
def test_args_nested_too_deeply_fail_validate_with_a_path(tmp_path, capsys, depth):
    doc = bare_manifest([{"id": "a", "worker": "bare", "args": {"deep": nested(depth)}}])
    path = write_manifest(tmp_path, doc)
    assert main(["validate", str(path)]) == 2
    text = capsys.readouterr().err
    assert "$.steps[0].args.deep.a.a" in text and "nested deeper than" in text and "Traceback" not in text


def test_nesting_within_the_limit_runs(tmp_path, schemas):
    doc = bare_manifest([{"id": "a", "worker": "bare", "args": {"echo": nested(MAX_NESTING - 6)}},
                         {"id": "b", "worker": "bare", "args": {"echo": "${steps.a.result.echo}"}}])
    m = write_manifest(tmp_path, doc)
    code, out, _ = run_runner(m, schemas)
    assert code == EXIT_OK, out


def test_reference_resolution_is_iterative():
    deep = nested(5000, "${steps.a.result.v}")
    resolved = refs.resolve(deep, {"a": {"v": [1, 2]}})
    for _ in range(5000):
        resolved = resolved["a"]
    assert resolved == [1, 2]


@pytest.mark.parametrize("where", ["value", "key", "worker_argv"])
def test_lone_surrogate_fails_validate_with_its_path(tmp_path, where):
    doc = bare_manifest([{"id": "a", "worker": "bare", "args": {"text": "ok"}}])
    text = json.dumps(doc)
    if where == "value":
        text = text.replace('"ok"', '"bad \\ud800 text"')
        expected = "$.steps[0].args.text"
    elif where == "key":
        text = text.replace('"text"', '"k\\udfff"')
        expected = "$.steps[0].args"
    else:
        text = text.replace('"bare": [', '"bare": ["\\ud83d", ')
        expected = "$.workers.bare[0]"
    found = problems_of(tmp_path, text)
    assert any(p["path"] == expected and p["type"] == "lone_surrogate" for p in found), found


def test_a_paired_surrogate_escape_is_fine(tmp_path):
    doc = bare_manifest([{"id": "a", "worker": "bare", "args": {"text": "PLACEHOLDER"}}])
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc).replace("PLACEHOLDER", "\\ud83d\\ude00"), encoding="utf-8")
    assert load(path).steps["a"].args["text"] == "\U0001f600"


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda text: text[:-1] + ', "steps": [{"id": "other", "worker": "bare"}]}', "$.steps"),  # `steps` twice
    (lambda text: text.replace('{"x": 1}', '{"x": 1, "x": 2}'), "$.steps[0].args.x"),
])
def test_duplicate_keys_are_rejected(tmp_path, edit, expected):
    text = edit(json.dumps(bare_manifest([{"id": "a", "worker": "bare", "args": {"x": 1}}])))
    found = problems_of(tmp_path, text)
    assert (expected, "duplicate_key") in {(p["path"], p["type"]) for p in found}, found


def test_topological_order_is_linear_and_stable():
    n = 20000
    ids = [f"s{i}" for i in range(n)]
    flat = {s: [] for s in ids}
    started = time.perf_counter()
    assert topological_order(ids, flat) == ids
    chain = {s: ([ids[i - 1]] if i else []) for i, s in enumerate(ids)}
    assert topological_order(ids, chain) == ids
    assert time.perf_counter() - started < 2.0  # the quadratic version took minutes at this size
    # manifest order among independent steps; dependencies first
    assert topological_order(["c", "a", "b"], {"c": ["b"], "a": [], "b": []}) == ["a", "b", "c"]
