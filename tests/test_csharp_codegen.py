"""The generated C# contract types are fresh: hosts/csharp/generate_types.py --check (pinned quicktype)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import REPO

GENERATOR = REPO / "hosts" / "csharp" / "generate_types.py"
QUICKTYPE = REPO / "hosts" / "csharp" / "node_modules" / ".bin" / "quicktype"

pytestmark = pytest.mark.skipif(not QUICKTYPE.exists(),
                                reason="needs the pinned quicktype: npm ci --prefix hosts/csharp (.ci/run does it)")


def check(*extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(GENERATOR), "--check", *extra], capture_output=True, text=True,
                          timeout=240)


def test_committed_types_match_the_schemas():
    proc = check()
    assert proc.returncode == 0, proc.stderr


def test_a_stale_or_missing_file_fails_the_check(tmp_path):
    stale = tmp_path / "Generated"
    shutil.copytree(REPO / "hosts" / "csharp" / "Generated", stale)
    envelope = stale / "Envelope.cs"
    envelope.write_text(envelope.read_text("utf-8").replace("Retryable", "Retriable"), encoding="utf-8")
    (stale / "WhisperArgs.cs").unlink()
    proc = check("--generated", str(stale))
    assert proc.returncode == 1
    assert "Envelope.cs, WhisperArgs.cs" in proc.stderr and "generate_types.py" in proc.stderr
