"""The committed schemas are what the contract models generate, and they are valid Draft 2020-12."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema

from workers.contract import CONTRACT_VERSION

from conftest import REPO


def test_committed_schemas_match_the_models():
    proc = subprocess.run([sys.executable, "-m", "bridge", "schema", "--check"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_schema_check_detects_a_stale_file(tmp_path):
    subprocess.run([sys.executable, "-m", "bridge", "schema", "--write", "--dir", str(tmp_path)], check=True,
                   capture_output=True)
    envelope = tmp_path / "envelope.schema.json"
    envelope.write_text(envelope.read_text().replace('"success"', '"succeeded"'))
    (tmp_path / "old.schema.json").write_text("{}")
    proc = subprocess.run([sys.executable, "-m", "bridge", "schema", "--check", "--dir", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "envelope.schema.json" in proc.stderr and "old.schema.json" in proc.stderr


def test_every_schema_is_valid_draft_2020_12_with_a_contract_version():
    files = sorted((REPO / "schemas").glob("*.schema.json"))
    names = {f.name for f in files}
    assert {"envelope.schema.json", "serve.schema.json", "manifest.schema.json", "describe.schema.json",
            "whisper.args.schema.json", "whisper.result.schema.json"} <= names
    for f in files:
        doc = json.loads(f.read_text("utf-8"))
        jsonschema.Draft202012Validator.check_schema(doc)
        assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert doc["x-contract-version"] == CONTRACT_VERSION


def test_every_args_example_is_accepted_by_the_schema_and_the_worker_model():
    from workers.contract.registry import WORKER_CONTRACT_MODULES, worker_models

    checked = 0
    for name in WORKER_CONTRACT_MODULES:
        schema = json.loads((REPO / "schemas" / f"{name}.args.schema.json").read_text("utf-8"))
        args_model, _ = worker_models(name)
        for example in schema.get("examples", []):
            jsonschema.Draft202012Validator(schema).validate(example)
            args_model.model_validate(example)
            checked += 1
    assert checked >= 2  # the vision worker's examples at least
