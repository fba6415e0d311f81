"""Shared test helpers. Area-specific fixtures live next to their tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURE_WORKER = REPO / "tests" / "fixtures" / "fixture_worker.py"


def _cuda_available() -> bool:
    """A GPU visible to CTranslate2 (whisper) or torch (diffusers/transformers workers)."""
    try:
        import ctranslate2

        if ctranslate2.get_cuda_device_count() > 0:
            return True
    except ImportError:
        pass
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    if not _cuda_available():
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)


@pytest.fixture
def fixture_worker_argv() -> list[str]:
    """argv that starts the test-only contract worker (tests/fixtures/fixture_worker.py)."""
    return [sys.executable, str(FIXTURE_WORKER)]
