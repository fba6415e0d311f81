"""`-i key=value`, `-o`, `--pretty` and the schema-generated `--help` of every worker."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis_jsonschema import from_schema
from worker_process import FIXTURE, NARRATION, WHISPER, paths, run

from workers.contract import EXIT_CODES, ErrorKind
from workers.contract.registry import WORKER_CONTRACT_MODULES, worker_models
from workers.runtime.keyvalue import field_types, parse_assignments, parse_value

from conftest import REPO


def schema_of(worker: str) -> dict:
    return worker_models(worker)[0].model_json_schema(mode="validation")


def parsed(worker: str, *assignments: str) -> dict:
    document, problems = parse_assignments(schema_of(worker), assignments)
    assert not problems.items, problems.items
    return document


def test_each_value_is_read_by_the_type_the_schema_gives_its_key():
    assert parsed("whisper", "beam_size=7", "vad_threshold=0.25", "vad_speech_pad_ms=0", "word_timestamps=false",
                  "model=1", "initial_prompt=null") == {
        "beam_size": 7, "vad_threshold": 0.25, "vad_speech_pad_ms": 0, "word_timestamps": False,
        "model": "1",  # a string field keeps the text, even when it looks like a number
        "initial_prompt": "null"}  # ... or like null: a nullable string is unset by leaving it out
    assert parsed("whisper", "drop_avg_logprob=-1") == {"drop_avg_logprob": -1}  # an integer is a number too
    assert parsed("whisper", "beam_size=5.0") == {"beam_size": 5.0}  # ... and 5.0 an integer, as in an args file
    assert parsed("ltx", "seed=null", "fps=30") == {"seed": None, "fps": 30}


def test_arrays_and_objects_are_json():
    assert parsed("whisper", 'formats=["srt","vtt"]') == {"formats": ["srt", "vtt"]}
    assert parsed("sdxl", 'output_size={"width": 64, "height": 32}', 'prompts=["a fox", {"prompt": "a hen"}]') == {
        "output_size": {"width": 64, "height": 32}, "prompts": ["a fox", {"prompt": "a hen"}]}


def test_types_follow_refs_and_unions():
    schema = schema_of("sdxl")
    props = schema["properties"]
    assert field_types(schema, props["output_size"]) == {"object", "null"}
    assert field_types(schema, props["prompts"]) == {"array"}
    assert field_types(schema, props["scheduler"]) == {"string", "null"}
    assert field_types(schema, props["width"]) == {"integer", "null"}


@pytest.mark.parametrize(("text", "types", "why"), [
    ("1.5", {"integer"}, "is number, expected integer"),
    ("5.5", {"integer", "null"}, "is number, expected integer or null"),
    ("yes", {"boolean"}, "not a JSON boolean"),
    ("1", {"boolean"}, "is integer, expected boolean"),
    ("NaN", {"number"}, "not a JSON number"),
    ("srt", {"array"}, "not a JSON array"),
    ("[1]", {"object", "null"}, "is array, expected null or object"),
    ("null", {"integer"}, "is null, expected integer"),
])
def test_an_unparsable_value_says_what_was_expected(text, types, why):
    with pytest.raises(ValueError, match=why):
        parse_value(text, types)


def test_unknown_repeated_and_malformed_assignments_are_field_errors():
    _, problems = parse_assignments(schema_of("whisper"), ["modle=tiny.en", "beam_size=2", "beam_size=3",
                                                           "beam_size=x", "novalue", "=1"])
    by_path = {(e["path"], e["type"]) for e in problems.items}
    assert by_path == {("$.modle", "extra_forbidden"), ("$.beam_size", "duplicate"), ("$", "usage")}
    assert "did you mean 'model'" in problems.items[0]["message"]


def as_assignments(schema: dict, document: dict) -> tuple[list[str], dict]:
    """The -i texts a person would type for `document`, and the document they stand for (a nullable string left
    unset is left out: that is how it is written with -i)."""
    texts, expected = [], {}
    for key, value in document.items():
        string_field = field_types(schema, schema["properties"][key]) - {"null"} == {"string"}
        if string_field and value is None:
            continue
        texts.append(f"{key}={value if string_field else json.dumps(value)}")
        expected[key] = value
    return texts, expected


@pytest.mark.parametrize("worker", sorted(WORKER_CONTRACT_MODULES))
def test_any_schema_valid_document_written_as_i_reads_back_the_same(worker):
    schema = schema_of(worker)

    @settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(from_schema(schema))
    def check(document):
        texts, expected = as_assignments(schema, document)
        parsed, problems = parse_assignments(schema, texts)
        assert not problems.items and parsed == expected

    check()


def fixture_result(doc: dict, out_dir: str) -> dict:
    """The envelope's result and outputs with the output directory taken out (it differs between runs)."""
    assert doc["success"], doc
    text = json.dumps({"result": doc["result"], "outputs": doc["outputs"]}).replace(out_dir, "OUT")
    return json.loads(text)


def test_i_and_o_give_the_same_answer_as_the_equivalent_args_file(tmp_path):
    args = {"mode": "ok", "outputs": {"a.txt": "alpha"}, "echo": {"n": [1, 2.5, None]}, "sleep_s": 0.5,
            "retryable": True, "fail_times": 3, "input_files": [], "model": "m-1"}
    file_dir, cli_dir = str(tmp_path / "from_file"), str(tmp_path / "from_cli")
    code_file, from_file = run(FIXTURE, tmp_path, {**args, "output_dir": file_dir})
    code_cli, from_cli = run([*FIXTURE, "-i", "mode=ok", "-i", 'outputs={"a.txt": "alpha"}',
                              "-i", 'echo={"n": [1, 2.5, null]}', "-i", "sleep_s=0.5", "-i", "retryable=true",
                              "-i", "fail_times=3", "-i", "input_files=[]", "-i", "model=m-1", "-o", cli_dir],
                             tmp_path)
    assert code_file == code_cli == 0
    assert fixture_result(from_file, file_dir) == fixture_result(from_cli, cli_dir)


def test_i_overrides_keys_of_an_input_file(tmp_path):
    out = str(tmp_path / "out")
    code, doc = run([*FIXTURE, "-i", 'echo="from -i"', "-o", out], tmp_path, {"echo": "from file", "output_dir": "x"})
    assert code == 0 and doc["result"]["echo"] == "from -i"
    assert all(o["path"].startswith(out) for o in doc["outputs"])


def test_bad_i_values_are_invalid_input_with_field_errors(tmp_path):
    code, doc = run([*FIXTURE, "-i", "mode=sideways", "-i", "sleep_s=soon", "-i", "colour=red", "-o",
                     str(tmp_path / "o")], tmp_path)
    assert code == EXIT_CODES[ErrorKind.invalid_input] and doc["error"]["kind"] == "invalid_input"
    assert paths(doc) == {"$.sleep_s", "$.colour"}  # parsing problems first; the enum is the schema's to judge
    code, doc = run([*FIXTURE, "-i", "mode=sideways", "-o", str(tmp_path / "o")], tmp_path)
    assert code == EXIT_CODES[ErrorKind.invalid_input] and paths(doc) == {"$.mode"}


def test_o_and_i_output_dir_together_is_an_error(tmp_path):
    code, doc = run([*FIXTURE, "-i", f"output_dir={tmp_path}", "-o", str(tmp_path)], tmp_path)
    assert code == EXIT_CODES[ErrorKind.invalid_input] and paths(doc) == {"$.output_dir"}


def test_i_with_serve_is_a_usage_error(tmp_path):
    code, doc = run([*FIXTURE, "--serve", "-i", "mode=ok"], tmp_path)
    assert code == EXIT_CODES[ErrorKind.invalid_input]
    assert doc["error"]["details"]["field_errors"][0]["type"] == "usage"


def test_pretty_indents_the_one_answer(tmp_path):
    proc = subprocess.run([*FIXTURE, "-i", "mode=ok", "-o", str(tmp_path / "o"), "--pretty"], capture_output=True,
                          cwd=REPO, timeout=60)
    text = proc.stdout.decode("utf-8")
    assert proc.returncode == 0 and text.count("\n") > 5 and text.startswith("{\n  ")
    assert json.loads(text)["success"] is True  # still one JSON document


def every_field_name(schema: dict) -> set[str]:
    names = set(schema.get("properties", {}))
    for definition in schema.get("$defs", {}).values():
        names |= set(definition.get("properties", {}))
    return names


@pytest.mark.parametrize("worker", sorted(WORKER_CONTRACT_MODULES))
def test_help_lists_every_field_of_the_args_schema_on_stdout(worker):
    proc = subprocess.run([sys.executable, "-m", f"workers.{worker}", "--help"], capture_output=True, cwd=REPO,
                          timeout=60)
    text = proc.stdout.decode("utf-8")
    assert proc.returncode == 0
    listed = {line.split()[0] for line in text.splitlines() if line.startswith("  ") and "  (" in line}
    schema = schema_of(worker)
    assert every_field_name(schema) <= listed, every_field_name(schema) - listed
    lines = text.splitlines()
    for required in schema["required"]:
        assert any(line.startswith(f"  {required}  (") and line.endswith("; required)") for line in lines), required


def test_help_shows_type_default_bounds_choices_and_description():
    from workers.runtime.schema_help import render_args_help

    text = render_args_help(schema_of("whisper"))
    assert "  beam_size  (integer; default 5)\n      1 <= value <= 20\n      Beam width" in text
    assert "  task  (string; default \"transcribe\")\n      choices: transcribe, translate" in text
    assert "  formats  (array of string; default" not in text  # no default in the schema: a factory
    assert "  formats  (array of string; optional)\n      at most 4 items; no repeats; each choices: json, srt, vtt, txt" in text
    assert "word_timestamps must be true when hallucination_silence_threshold_s is set" in text  # a cross-field rule


@pytest.mark.slow
def test_whisper_with_i_matches_the_args_file(tmp_path):
    args = {"audio_path": str(NARRATION), "model": "tiny.en", "formats": ["srt", "vtt"], "max_words_per_cue": 2,
            "vad_filter": False}
    code_file, from_file = run(WHISPER, tmp_path, {**args, "output_dir": str(tmp_path / "a")})
    code_cli, from_cli = run([*WHISPER, "-i", f"audio_path={NARRATION}", "-i", "model=tiny.en", "-i",
                              'formats=["srt","vtt"]', "-i", "max_words_per_cue=2", "-i", "vad_filter=false",
                              "-o", str(tmp_path / "b")], tmp_path)
    assert code_file == code_cli == 0
    assert from_file["result"]["segments"] == from_cli["result"]["segments"]
    assert [o["sha256"] for o in from_file["outputs"]] == [o["sha256"] for o in from_cli["outputs"]]
