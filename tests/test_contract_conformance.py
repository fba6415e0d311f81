"""The schema is the contract: on any args document, the committed JSON Schema and the worker give one verdict.

For every worker the contract covers (`WORKER_CONTRACT_MODULES`, which a new worker joins to get its schemas
committed) and for the test fixture worker, hypothesis generates args from the schema (hypothesis-jsonschema)
and mutates them with the values hosts really send by mistake: numbers as strings, 0/1 for booleans, case and
whitespace variants of enum values, out-of-range numbers, repeated list items, missing and unknown fields.
`jsonschema` on the schema a host reads must agree with the worker's validation, and the strict pydantic model
alone must agree too (so no rule lives only in one of them).
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from pydantic import BaseModel, ValidationError

from workers.contract.registry import WORKER_CONTRACT_MODULES, worker_models
from workers.runtime.errors import InvalidInput
from workers.runtime.validation import integral_floats_as_ints, validate_document

from conftest import FIXTURE_WORKER, REPO


def _fixture_args() -> type[BaseModel]:
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("fixture_worker", FIXTURE_WORKER)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fixture_worker", module)  # pydantic resolves the annotations through it
    spec.loader.exec_module(module)
    return module.Args


def _cases() -> list[tuple[str, type[BaseModel], dict]]:
    """(worker, args model, the schema a host reads): committed files for real workers, generated for the fixture."""
    cases = []
    for name in sorted(WORKER_CONTRACT_MODULES):
        committed = json.loads((REPO / "schemas" / f"{name}.args.schema.json").read_text("utf-8"))
        cases.append((name, worker_models(name)[0], committed))
    fixture = _fixture_args()
    cases.append(("fixture", fixture, fixture.model_json_schema(mode="validation")))
    return cases


CASES = _cases()

#: Values a host sends by mistake; each is tried in every field.
CONFUSED_VALUES: list[Any] = [
    "5", "0", "1", "true", "false", "yes", "", " ", "null", "1e3", "5.0", 5.5, 5.0, 0, 1, -1, 2**31, -(2**31),
    1e300, True, False, None, [], [1], ["srt", "srt"], {}, {"a": 1}, "cpu\n", "CPU", " auto", "cuda:x", "a/b",
    "..", "\u00e9", "x" * 300,
]


def _near_misses(sub: dict) -> list[Any]:
    """Values just outside one property's subschema: bounds +- a little, enum members with case/space changes."""
    values: list[Any] = []
    for branch in [sub, *sub.get("anyOf", [])]:
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if key in branch:
                values += [branch[key], branch[key] - 1, branch[key] + 1, branch[key] + 0.5, float(branch[key])]
        for member in branch.get("enum", []):
            if isinstance(member, str):
                values += [member.upper(), f" {member}", f"{member}\n", member.title()]
        if "const" in branch:
            values.append(branch["const"])
        if "maxLength" in branch:
            values.append("a" * (branch["maxLength"] + 1))
        if branch.get("type") == "array":
            values += [[], [None], ["json", "json"]]
    return values


@st.composite
def _mutated(draw, schema: dict, valid: st.SearchStrategy) -> dict:
    doc = dict(draw(valid))
    properties = schema.get("properties", {})
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["set", "set", "set", "set", "drop", "unknown", "dup_item"]))
        if action == "drop" and doc:
            doc.pop(draw(st.sampled_from(sorted(doc))))
        elif action == "unknown":
            doc[draw(st.sampled_from(["typo_field", "Model", "beam", "output-dir"]))] = draw(st.sampled_from(CONFUSED_VALUES))
        elif action == "dup_item":
            lists = [k for k, v in doc.items() if isinstance(v, list) and v]
            if lists:
                key = draw(st.sampled_from(lists))
                doc[key] = [*doc[key], doc[key][0]]
        else:
            key = draw(st.sampled_from(sorted(properties)))
            doc[key] = draw(st.sampled_from(CONFUSED_VALUES + _near_misses(properties[key])))
    return doc


def _documents(schema: dict):
    """Mostly mutated documents: a valid one is the starting point of each, so both verdicts stay common."""
    valid = from_schema(schema)  # built once: hypothesis-jsonschema canonicalises the schema when it is made
    return st.one_of(valid, _mutated(schema, valid), _mutated(schema, valid), _mutated(schema, valid))


def _worker_verdict(model: type[BaseModel], name: str, doc: dict) -> tuple[bool, list[dict]]:
    try:
        validate_document(model, doc, name)
    except InvalidInput as exc:
        assert exc.details["field_errors"], "invalid_input without field errors"
        return False, exc.details["field_errors"]
    return True, []


def _model_alone_accepts(model: type[BaseModel], doc: dict) -> bool:
    try:
        model.model_validate(integral_floats_as_ints(doc))
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("name, model, schema", CASES, ids=[c[0] for c in CASES])
def test_schema_and_worker_give_one_verdict(name, model, schema):
    validator = jsonschema.Draft202012Validator(schema)
    seen = {True: 0, False: 0}

    @settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(_documents(schema))
    def check(doc):
        host_accepts = validator.is_valid(doc)
        worker_accepts, errors = _worker_verdict(model, name, doc)
        assert worker_accepts == host_accepts, f"schema says {host_accepts}, worker says {worker_accepts}: {doc!r} {errors}"
        assert _model_alone_accepts(model, doc) == host_accepts, f"the strict model disagrees with the schema on {doc!r}"
        if not host_accepts:
            host_paths = {"$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
                          for e in validator.iter_errors(doc)}
            for path in host_paths:  # every place the host's validator points at is named by the worker too
                assert any(e["path"] == path or e["path"].startswith(path) for e in errors), (path, errors)
        seen[host_accepts] += 1

    check()
    # the generator must exercise both verdicts, or the property proves nothing
    assert seen[True] >= 50 and seen[False] >= 150, seen


def test_every_registered_worker_and_the_fixture_are_covered():
    assert {c[0] for c in CASES} == set(WORKER_CONTRACT_MODULES) | {"fixture"}
