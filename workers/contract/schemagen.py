"""Deterministic JSON-Schema (Draft 2020-12) generation from the contract models."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from .describe import WorkerDescription
from .envelope import ResultEnvelope
from .registry import WORKER_CONTRACT_MODULES, worker_models
from .serve import ServePong, ServeReady, ServeRequest, ServeResult, ServeShutdown
from .version import CONTRACT_VERSION

DRAFT = "https://json-schema.org/draft/2020-12/schema"
ID_BASE = "https://storybridge.dev/schemas/"


def _document(model: type[BaseModel], file_name: str, title: str, mode: str) -> dict:
    schema = model.model_json_schema(mode=mode, ref_template="#/$defs/{model}")
    return {
        "$schema": DRAFT,
        "$id": ID_BASE + file_name,
        "x-contract-version": CONTRACT_VERSION,
        **{k: v for k, v in schema.items() if k != "title"},
        "title": title,
    }


def _serve_document() -> dict:
    class _Messages(BaseModel):  # a holder so all message types share one $defs table
        request: ServeRequest
        ready: ServeReady
        result: ServeResult
        pong: ServePong
        shutdown: ServeShutdown

    holder = _Messages.model_json_schema(mode="serialization", ref_template="#/$defs/{model}")
    return {
        "$schema": DRAFT,
        "$id": ID_BASE + "serve.schema.json",
        "x-contract-version": CONTRACT_VERSION,
        "title": "Warm-mode (--serve) JSON-lines messages",
        "description": "Requests are ServeRequest lines on stdin; responses are ServeReady, ServeResult, "
        "ServePong or ServeShutdown lines on stdout, told apart by `event`.",
        "$defs": holder["$defs"],
        "oneOf": [{"$ref": f"#/$defs/{n}"} for n in ("ServeRequest", "ServeReady", "ServeResult", "ServePong", "ServeShutdown")],
    }


def generate_all() -> dict[str, dict]:
    """file name -> schema document, for every committed schema."""
    docs: dict[str, dict] = {
        "envelope.schema.json": _document(ResultEnvelope, "envelope.schema.json", "Worker result envelope", "serialization"),
        "serve.schema.json": _serve_document(),
        "describe.schema.json": _document(WorkerDescription, "describe.schema.json", "Worker --describe answer",
                                          "serialization"),
    }
    for name in sorted(WORKER_CONTRACT_MODULES):
        args, result = worker_models(name)
        docs[f"{name}.args.schema.json"] = _document(args, f"{name}.args.schema.json", f"{name} args", "validation")
        docs[f"{name}.result.schema.json"] = _document(
            result, f"{name}.result.schema.json", f"{name} result", "serialization"
        )
    for file_name, (model_factory, title) in _EXTRA_DOCUMENTS.items():
        docs[file_name] = _document(model_factory(), file_name, title, "validation")
    return docs


#: Extra documents owned by other packages (e.g. the bridge's manifest), registered lazily.
_EXTRA_DOCUMENTS: dict[str, tuple[Callable[[], type[BaseModel]], str]] = {}


def register_document(file_name: str, model_factory: Callable[[], type[BaseModel]], title: str) -> None:
    _EXTRA_DOCUMENTS[file_name] = (model_factory, title)


def render(doc: dict) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def stale_files(schema_dir: Path) -> list[str]:
    """Names of schema files that are missing, differ from the models, or are not generated any more."""
    docs = generate_all()
    stale = [n for n, d in docs.items() if not (schema_dir / n).is_file() or (schema_dir / n).read_text("utf-8") != render(d)]
    stale += sorted(p.name for p in schema_dir.glob("*.schema.json") if p.name not in docs)
    return sorted(stale)


def write_all(schema_dir: Path) -> list[str]:
    schema_dir.mkdir(parents=True, exist_ok=True)
    docs = generate_all()
    for name, doc in docs.items():
        (schema_dir / name).write_text(render(doc), encoding="utf-8", newline="\n")
    for p in schema_dir.glob("*.schema.json"):
        if p.name not in docs:
            p.unlink()
    return sorted(docs)
