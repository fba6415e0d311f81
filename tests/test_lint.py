"""Style rules CI enforces (ruff config in pyproject.toml; T20 bans print in library code)."""

import shutil
import subprocess

import pytest

from conftest import REPO


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed (pip install -e '.[dev]')")
def test_ruff_is_clean():
    proc = subprocess.run(["ruff", "check", "bridge", "workers", "tests", "bench"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
