"""`storybridge` (bridge.front): the runner's commands, `workers`, `call` and tab completion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from bridge_helpers import REPO, fixture_manifest, write_manifest

from bridge import cli, front
from workers.contract.registry import WORKER_CONTRACT_MODULES

HEAVY = ("torch", "diffusers", "transformers", "faster_whisper", "ctranslate2", "av", "PIL")


def storybridge(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m bridge ARGS` (the same front door as the `storybridge` console script)."""
    return subprocess.run([sys.executable, "-m", "bridge", *argv], capture_output=True, text=True, cwd=REPO,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def test_workers_lists_the_registry_without_importing_torch():
    code = textwrap.dedent(f"""
        import json, sys
        from bridge.front import main
        assert main(["workers", "--json"]) == 0
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        print(json.dumps(heavy), file=sys.stderr)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == []
    listed = json.loads(proc.stdout)
    assert [w["name"] for w in listed] == sorted(WORKER_CONTRACT_MODULES)
    for w in listed:
        assert w["version"] and "cpu" in w["devices"] and w["warm"] is True and w["extra"] == w["name"]


def ghost_worker(root) -> None:
    """A registered worker whose extra is not installed (its one required module does not exist)."""
    pkg = root / "ghostworker"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "contract.py").write_text(textwrap.dedent("""
        from pydantic import BaseModel
        from workers.contract import ModelArgs
        class Args(ModelArgs):
            model: str = "m"
        class Result(BaseModel):
            ok: bool
    """))
    (pkg / "worker.py").write_text(textwrap.dedent("""
        from workers.runtime import Worker
        from .contract import Args, Result
        class GhostWorker(Worker):
            name, version, Args, Result = "ghost", "0.1", Args, Result
            extra, requires = "ghost", ("storybridge_module_that_is_not_installed",)
            def load(self, args, ctx):
                import storybridge_module_that_is_not_installed
            def run(self, model, args, ctx):
                return Result(ok=True)
    """))


def test_workers_reports_a_missing_extra(tmp_path, monkeypatch, capsys):
    ghost_worker(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(WORKER_CONTRACT_MODULES, "ghost", "ghostworker.contract")
    assert front.main(["workers", "--json"]) == 0
    ghost = next(w for w in json.loads(capsys.readouterr().out) if w["name"] == "ghost")
    assert ghost["installed"] is False and ghost["missing"] == ["storybridge_module_that_is_not_installed"]
    assert ghost["install"] == "pip install 'storybridge[ghost]'"
    assert front.main(["workers"]) == 0
    table = capsys.readouterr().out
    assert "ghost" in table and "no: missing storybridge_module_that_is_not_installed" in table


def test_a_worker_that_does_not_import_is_listed_as_not_installed(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(WORKER_CONTRACT_MODULES, "broken", "storybridge_no_such_package.contract")
    assert front.main(["workers", "--json"]) == 0
    listed = {w["name"]: w for w in json.loads(capsys.readouterr().out)}
    assert listed["broken"]["installed"] is False and listed["broken"]["missing"] == ["storybridge_no_such_package"]
    assert listed["whisper"]["installed"] is True  # the others are still listed


def test_call_is_the_worker_command_line():
    via_call = storybridge("call", "whisper", "-i", "model=tiny.en", "-i", "beam_size=x", "-o", "/tmp/x")
    direct = subprocess.run([sys.executable, "-m", "workers.whisper", "-i", "model=tiny.en", "-i", "beam_size=x",
                             "-o", "/tmp/x"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert via_call.returncode == direct.returncode == 2
    assert json.loads(via_call.stdout) == json.loads(direct.stdout)
    assert json.loads(via_call.stdout)["error"]["details"]["field_errors"][0]["path"] == "$.beam_size"
    help_text = storybridge("call", "whisper", "--help").stdout
    assert "audio_path  (string; required)" in help_text
    unknown = storybridge("call", "nope")
    assert unknown.returncode == 2 and "installed workers: " in unknown.stderr


def test_python_m_bridge_keeps_the_runner_commands(tmp_path):
    m = write_manifest(tmp_path, fixture_manifest([{"id": "a", "worker": "fixture", "args": {}}]))
    proc = storybridge("validate", str(m), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["order"] == ["a"]
    assert storybridge("schema", "--check").returncode == 0
    assert storybridge("run", "--help").stdout.startswith("usage: storybridge run")
    for name in cli.RUNNER_COMMANDS:  # every runner command, parsed as `bridge.cli` parses it
        argv = [name, *_minimal(name)]
        assert vars(front.build_parser().parse_args(argv)) == vars(cli.build_parser().parse_args(argv))


def _minimal(command: str) -> list[str]:
    return {"schema": ["--check"], "validate": ["m.json"], "run": ["m.json"]}[command]


def complete(line: str, tmp_path) -> list[str]:
    """What argcomplete offers for `line` (the protocol bash's completion function speaks)."""
    out = tmp_path / "completions"
    storybridge(env={"_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
                     "_ARGCOMPLETE_STDOUT_FILENAME": str(out), "_ARGCOMPLETE_IFS": "\n"})
    return [c.strip() for c in out.read_text().split("\n")] if out.exists() else []


def test_tab_completion_offers_commands_options_and_worker_names(tmp_path):
    assert "clean" in complete("storybridge cl", tmp_path)
    assert set(complete("storybridge clean --k", tmp_path)) == {"--keep-last"}
    assert "whisper" in complete("storybridge call wh", tmp_path)


def test_the_runner_commands_import_no_workers(tmp_path):
    """The front door offers `workers` and `call`, but `run`/`validate` stay as light as the runner."""
    m = write_manifest(tmp_path, fixture_manifest([{"id": "a", "worker": "fixture", "args": {}}]))
    code = textwrap.dedent(f"""
        import sys
        from bridge.front import main
        assert main(["validate", {str(m)!r}]) == 0
        print(sorted(n for n in sys.modules if n.split(".")[0] in ("workers", "torch")), file=sys.stderr)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0 and proc.stderr.strip().splitlines()[-1] == "[]", proc.stderr
