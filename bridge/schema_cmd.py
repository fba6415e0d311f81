"""`python -m bridge schema --check|--write`: the committed schemas/ must equal what the models generate."""

from __future__ import annotations

from pathlib import Path

# The contract models are the source of truth; importing them pulls pydantic only (no worker code, no torch).
from workers.contract import schemagen

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


def _register_bridge_documents() -> None:
    def manifest_model():
        from .manifest import Manifest

        return Manifest

    schemagen.register_document("manifest.schema.json", manifest_model, "storybridge run manifest")


def check(schema_dir: Path = SCHEMA_DIR) -> list[str]:
    _register_bridge_documents()
    return schemagen.stale_files(schema_dir)


def write(schema_dir: Path = SCHEMA_DIR) -> list[str]:
    _register_bridge_documents()
    return schemagen.write_all(schema_dir)
