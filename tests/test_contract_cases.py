"""Each disagreement between the contract and the workers that a host author found, as a test of the real process.

(The generated-document property is in test_contract_conformance.py; these are the concrete cases.)
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from worker_process import FIXTURE, WHISPER, paths, run, whisper_args

from conftest import REPO

WHISPER_SCHEMA = json.loads((REPO / "schemas" / "whisper.args.schema.json").read_text("utf-8"))


# --- the worker used to accept what the schema forbids (lax coercion) --------------------------------------

@pytest.mark.parametrize("field, value", [
    ("beam_size", "5"), ("beam_size", True), ("word_timestamps", "yes"), ("vad_filter", 0), ("cpu_threads", "5"),
    ("allow_download", 1), ("vad_threshold", "0.5"), ("formats", "srt"), ("max_words_per_cue", 2.5),
])
def test_type_confused_values_are_refused_like_the_schema_does(tmp_path, field, value):
    args = whisper_args(tmp_path, **{field: value})
    assert not jsonschema.Draft202012Validator(WHISPER_SCHEMA).is_valid(args)
    code, doc = run(WHISPER, tmp_path, args)
    assert code == 2 and doc["error"]["kind"] == "invalid_input"
    assert paths(doc) == {f"$.{field}"}
    assert not (tmp_path / "out").exists()


def test_an_integral_float_is_an_integer_for_both(tmp_path):
    args = whisper_args(tmp_path, beam_size=1.0, formats=["txt"])  # JSON Schema: 1.0 is an integer
    assert jsonschema.Draft202012Validator(WHISPER_SCHEMA).is_valid(args)
    code, doc = run(WHISPER, tmp_path, args)
    assert code == 0, doc["error"]


# --- the schema used to allow what the worker rejects ------------------------------------------------------

@pytest.mark.parametrize("fields, path", [
    ({"formats": ["srt", "srt"]}, "$.formats"),
    ({"basename": "sub/name"}, "$.basename"),
    ({"basename": ".."}, "$.basename"),
    ({"basename": "name "}, "$.basename"),
    ({"language": "xx"}, "$.language"),
    ({"language": "EN"}, "$.language"),
    ({"device": "gpu"}, "$.device"),
    ({"device": "cpu\n"}, "$.device"),
    ({"device": "cpu", "compute_type": "float16"}, "$.compute_type"),
    ({"word_timestamps": False, "hallucination_silence_threshold_s": 2.0}, "$.word_timestamps"),
    ({"contract_version": "2.0.0"}, "$.contract_version"),
])
def test_rules_the_worker_enforces_are_in_the_schema(tmp_path, fields, path):
    args = whisper_args(tmp_path, **fields)
    host_errors = list(jsonschema.Draft202012Validator(WHISPER_SCHEMA).iter_errors(args))
    assert host_errors, f"the committed schema accepts {fields}"
    code, doc = run(WHISPER, tmp_path, args)
    assert code == 2 and paths(doc) == {path}
    assert "pattern" not in doc["error"]["message"]  # a message a user can act on, not a regex


# --- field errors everywhere, and all of them at once ------------------------------------------------------

@pytest.mark.parametrize("case", ["missing_file", "directory", "empty_stdin", "bogus_flag", "no_mode", "stdin_garbage"])
def test_unreadable_args_and_cli_misuse_carry_field_errors(tmp_path, case):
    argv, stdin = {
        "missing_file": ([*FIXTURE, "--input", str(tmp_path / "nope.json")], None),
        "directory": ([*FIXTURE, "--input", str(tmp_path)], None),
        "empty_stdin": ([*FIXTURE, "--input", "-"], b""),
        "bogus_flag": ([*FIXTURE, "--bogus"], None),
        "no_mode": (FIXTURE, None),
        "stdin_garbage": ([*FIXTURE, "--input", "-"], b"\x00\x01"),
    }[case]
    code, doc = run(argv, tmp_path, stdin=stdin)
    assert code == 2 and doc["error"]["kind"] == "invalid_input"
    assert [e["path"] for e in doc["error"]["details"]["field_errors"]] == ["$"]


@pytest.mark.parametrize("depth, kind", [(60, None), (1020, "invalid_input")])
def test_deeply_nested_args_are_invalid_input_not_a_crash(tmp_path, depth, kind):
    nested = "[" * depth + "]" * depth
    raw = f'{{"output_dir": {json.dumps(str(tmp_path / "o"))}, "echo": {nested}}}'
    code, doc = run([*FIXTURE, "--input", "-"], tmp_path, stdin=raw.encode())
    assert (doc["error"] or {}).get("kind") == kind
    if kind:
        assert code == 2 and doc["error"]["details"]["field_errors"][0]["type"] == "depth"


def test_one_bad_field_does_not_hide_another(tmp_path):
    args = whisper_args(tmp_path, beam_size="5", language="klingon", typo=1)
    del args["audio_path"]
    code, doc = run(WHISPER, tmp_path, args)
    assert code == 2
    assert paths(doc) == {"$.beam_size", "$.language", "$.typo", "$.audio_path"}


def test_every_path_outside_the_allowed_roots_is_reported(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    code, doc = run(WHISPER, tmp_path, whisper_args(tmp_path), env={"STORYBRIDGE_ALLOWED_ROOTS": str(allowed)})
    assert code == 2 and paths(doc) == {"$.audio_path", "$.output_dir"}
    assert "outside the allowed roots" in doc["error"]["message"]
