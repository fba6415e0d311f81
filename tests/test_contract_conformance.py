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
from workers.runtime.validation import integral_floats_as_ints, json_path, validate_document

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


def _fresh(value: Any) -> Any:
    """A copy: the pool's lists and dicts must never be shared between documents (a later mutation would loop)."""
    return json.loads(json.dumps(value))


_SAMPLE_OF_TYPE: dict[str, Any] = {"integer": 7, "number": 7.5, "string": "7", "boolean": True, "null": None,
                                   "array": [7], "object": {"x": 7}}


def _wrong_types(sub: dict) -> list[Any]:
    """One value of every JSON type the property does not allow."""
    allowed = {b["type"] for b in [sub, *sub.get("anyOf", [])] if isinstance(b.get("type"), str)}
    if not allowed or "$ref" in sub or any("$ref" in b for b in sub.get("anyOf", [])):
        return []  # a reference or an untyped property: the pool covers it
    if "number" in allowed:
        allowed.add("integer")
    return [v for t, v in _SAMPLE_OF_TYPE.items() if t not in allowed]


@st.composite
def _mutated(draw, schema: dict, valid: st.SearchStrategy) -> dict:
    doc = json.loads(json.dumps(draw(valid)))  # a deep copy: nested mutations must not touch hypothesis' value
    properties = schema.get("properties", {})
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["set", "set", "set", "set", "drop", "unknown", "dup_item", "nested", "nested"]))
        if action == "drop" and doc:
            doc.pop(draw(st.sampled_from(sorted(doc))))
        elif action == "unknown":
            doc[draw(st.sampled_from(["typo_field", "Model", "beam", "output-dir"]))] = _fresh(draw(st.sampled_from(CONFUSED_VALUES)))
        elif action == "nested":  # inside an object, or an object in a list (prompt items, sizes, refiner, ...)
            holders = [v for v in doc.values() if isinstance(v, dict) and v]
            holders += [item for v in doc.values() if isinstance(v, list) for item in v if isinstance(item, dict) and item]
            if holders:
                holder = draw(st.sampled_from(holders))
                holder[draw(st.sampled_from(sorted(holder) + ["typo"]))] = _fresh(draw(st.sampled_from(CONFUSED_VALUES)))
        elif action == "dup_item":
            lists = [k for k, v in doc.items() if isinstance(v, list) and v]
            if lists:
                key = draw(st.sampled_from(lists))
                doc[key] = [*doc[key], doc[key][0]]
        else:
            key = draw(st.sampled_from(sorted(properties)))
            specific = _near_misses(properties[key]) + _wrong_types(properties[key])
            pools = [st.sampled_from(CONFUSED_VALUES)] + ([st.sampled_from(specific)] if specific else [])
            doc[key] = _fresh(draw(st.one_of(pools)))
    return doc


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


def _check_one_verdict(validator, model: type[BaseModel], name: str, doc: dict) -> bool:
    """Assert host and worker agree on `doc` (and the strict model alone too); return the verdict."""
    host_accepts = validator.is_valid(doc)
    worker_accepts, errors = _worker_verdict(model, name, doc)
    assert worker_accepts == host_accepts, f"schema says {host_accepts}, worker says {worker_accepts}: {doc!r} {errors}"
    assert _model_alone_accepts(model, doc) == host_accepts, f"the strict model disagrees with the schema on {doc!r}"
    if not host_accepts:
        for path in {json_path(e.absolute_path) for e in validator.iter_errors(doc)}:
            # every place the host's validator points at is named by the worker too
            assert any(e["path"] == path or e["path"].startswith(path) for e in errors), (path, errors)
    return host_accepts


_SETTINGS = {"deadline": None, "suppress_health_check": list(HealthCheck), "derandomize": True}


@pytest.mark.parametrize("name, model, schema", CASES, ids=[c[0] for c in CASES])
def test_documents_generated_from_the_schema_are_accepted_by_the_worker(name, model, schema):
    validator = jsonschema.Draft202012Validator(schema)

    @settings(max_examples=100, **_SETTINGS)
    @given(from_schema(schema))
    def check(doc):
        assert _check_one_verdict(validator, model, name, doc)

    check()


@pytest.mark.parametrize("name, model, schema", CASES, ids=[c[0] for c in CASES])
def test_mutated_documents_get_one_verdict(name, model, schema):
    validator = jsonschema.Draft202012Validator(schema)
    seen = {True: 0, False: 0}

    @settings(max_examples=200, **_SETTINGS)  # the vision schema's rules make each example slow to generate
    @given(_mutated(schema, from_schema(schema)))
    def check(doc):
        seen[_check_one_verdict(validator, model, name, doc)] += 1

    check()
    # most mutations must really break the document, or the property proves little
    assert seen[False] >= 100, seen


def test_every_registered_worker_and_the_fixture_are_covered():
    assert {c[0] for c in CASES} == set(WORKER_CONTRACT_MODULES) | {"fixture"}
