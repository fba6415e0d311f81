"""Manifest `params`: defaults, `--param` overrides typed by the default, `${params.NAME}` substitution, and
a changed param re-running exactly the steps whose resolved args change."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from bridge_helpers import events, run_runner, schema_dir, trace, write_manifest
from test_bridge_concurrency import POOL, jobs_log, pool_manifest

from bridge.cli import main
from bridge.front import main as front_main
from bridge.manifest import ManifestInvalid, load
from bridge.runner import EXIT_OK

PARAMS = {"tag": "plain", "width": 1080, "scale": 0.5, "loud": False, "sizes": [1, 2], "models": "models",
          "python": sys.executable}


PARAMS_B_TAG = {"w": 1080, "deep": [[1, 2], "models/sdxl-1080"], "scale": 0.5, "loud": False}


def params_manifest(log: Path) -> dict:
    common = {"log_file": str(log)}
    doc = pool_manifest([
        {"id": "a", "worker": "pool", "ignore_input_files": ["log_file"],
         "args": {"tag": "${params.tag}", **common}},
        {"id": "b", "worker": "pool", "ignore_input_files": ["log_file"],
         "args": {"tag": {"w": "${params.width}", "deep": ["${params.sizes}", "${params.models}/sdxl-${params.width}"],
                          "scale": "${params.scale}", "loud": "${params.loud}"}, **common}},
        {"id": "c", "worker": "pool", "ignore_input_files": ["log_file"],
         "args": {"tag": "${steps.b.result.tag.w}", **common}},
    ], params=PARAMS)
    doc["workers"]["pool"] = ["${params.python}", POOL, "--one-shot"]
    return doc


def test_defaults_and_typed_overrides_are_substituted_at_any_depth(tmp_path):
    m = write_manifest(tmp_path, params_manifest(tmp_path / "log"))
    loaded = load(m)
    assert loaded.steps["b"].args["tag"] == PARAMS_B_TAG
    assert loaded.worker_argv("pool")[0] == sys.executable
    loaded = load(m, overrides=[("width", "720"), ("sizes", "[3]"), ("models", "/ckpt"), ("loud", "true"),
                                ("scale", "2"), ("tag", "42")])
    assert loaded.steps["a"].args["tag"] == "42"  # a string param takes the text as it is
    assert loaded.steps["b"].args["tag"] == {"w": 720, "deep": [[3], "/ckpt/sdxl-720"], "scale": 2, "loud": True}
    assert loaded.params["width"] == 720 and loaded.params["tag"] == "42"


@pytest.mark.parametrize(("override", "path", "text"), [
    (("nope", "1"), "$.params", "--param nope: no such param"),
    (("width", "wide"), "$.params.width", "--param width: 'wide' is not a JSON integer"),
    (("width", "1.5"), "$.params.width", "--param width: '1.5' is number, expected integer"),
    (("loud", "1"), "$.params.loud", "--param loud: '1' is integer, expected boolean"),
    (("sizes", '{"a": 1}'), "$.params.sizes", "expected array"),
])
def test_a_bad_override_is_a_problem_naming_the_param(tmp_path, override, path, text):
    m = write_manifest(tmp_path, params_manifest(tmp_path / "log"))
    with pytest.raises(ManifestInvalid) as info:
        load(m, overrides=[override])
    assert [(p.path, p.type) for p in info.value.problems] == [(path, "unknown_param" if path == "$.params"
                                                                else "param_type")]
    assert text in info.value.problems[0].message


def test_unknown_or_uninterpolable_params_are_validate_errors_with_json_paths(tmp_path, capsys):
    doc = params_manifest(tmp_path / "log")
    doc["steps"][0]["args"]["extra"] = ["${params.missing}"]
    doc["steps"][1]["args"]["name"] = "size-${params.sizes}"
    doc["workers"]["pool"].append("--x=${params.loud}")
    m = write_manifest(tmp_path, doc)
    assert main(["validate", str(m), "--json"]) == 2
    errors = {(e["path"], e["type"]) for e in json.loads(capsys.readouterr().out)["errors"]}
    assert errors == {("$.steps[0].args.extra[0]", "bad_param"), ("$.steps[1].args.name", "bad_param"),
                      ("$.workers.pool[3]", "bad_param")}


def test_params_reach_foreach_lists(tmp_path):
    doc = params_manifest(tmp_path / "log")
    doc["params"]["field"] = "items"
    doc["steps"].append({"id": "each", "worker": "pool", "foreach": {"x": "${steps.a.result.${params.field}}"}})
    loaded = load(write_manifest(tmp_path, doc), overrides=[("field", "other")])
    assert loaded.steps["each"].foreach == {"x": "${steps.a.result.other}"} and loaded.deps["each"] == ["a"]


def test_cli_param_option_exits_2_naming_the_param(tmp_path, capsys):
    m = write_manifest(tmp_path, params_manifest(tmp_path / "log"))
    assert front_main(["validate", str(m), "--param", "width=wide"]) == 2  # storybridge has the option too
    assert "--param width" in capsys.readouterr().err
    assert main(["validate", str(m), "--param", "width=wide"]) == 2
    assert "--param width" in capsys.readouterr().err
    assert main(["run", str(m), "--param", "nope=1", "--dry-run"]) == 2
    assert "--param nope: no such param" in capsys.readouterr().err
    assert main(["validate", str(m), "--param", "width=720"]) == 0
    with pytest.raises(SystemExit) as info:
        main(["validate", str(m), "--param", "width"])  # not NAME=VALUE: argparse's usage error
    assert info.value.code == 2


def test_a_changed_param_reruns_only_the_steps_whose_args_change(tmp_path):
    schemas, log, work = schema_dir(tmp_path), tmp_path / "jobs.log", tmp_path / "t.work"
    m = write_manifest(tmp_path, params_manifest(log))
    code, out, _ = run_runner(m, schemas, overrides=[("width", "720")])
    assert code == EXIT_OK, out
    assert len(jobs_log(log)) == 3
    start = next(e for e in events(work) if e["event"] == "run_start")
    assert start["params"]["width"] == 720 and trace(work)["params"]["width"] == 720

    log.unlink()
    code, out, _ = run_runner(m, schemas, overrides=[("width", "720")])
    assert code == EXIT_OK and not log.exists(), out  # same params: all cached

    code, out, _ = run_runner(m, schemas, explain=True)  # width back to its default: b, and c through b
    assert code == EXIT_OK, out
    assert [j["tag"] for j in jobs_log(log)] == [PARAMS_B_TAG, 1080]  # b, then c; a not again
    assert "skip    a: up to date" in out and "run     b: args changed" in out
