"""The whisper subtitle worker: narration audio -> word-timed transcript -> short-form subtitle files.

Recipe: check_inputs (file exists and has an audio stream) -> load (cached per model, device,
compute type and threads) -> decode -> transcribe -> drop hallucinated segments -> fix times ->
shape cues -> write files. faster_whisper, ctranslate2 and av are imported only inside the
methods that need them, after the args were validated.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.runtime import ExternalError, InvalidInput, JobContext, ModelUnavailable, Worker, input_file
from workers.runtime.errors import is_out_of_memory

from . import __version__
from .contract import CPU_UNSUPPORTED_COMPUTE_TYPES, Args, Cue, OutputPaths, Result, Segment, Word
from .model_files import cuda_library_error, resolve_model_path, unreadable_model
from .script import LOW_MATCH_RATIO, read_script, timed_script
from .subtitles import (
    CueLimits,
    TimedSegment,
    TimedWord,
    fix_times,
    shape_cues,
    spread_words,
    write_srt,
    write_txt,
    write_vtt,
)

SAMPLE_RATE_HZ = 16_000


@dataclass
class LoadedModel:
    model: Any  # faster_whisper.WhisperModel
    model_path: str
    device: str  # "cpu" or "cuda:N"
    compute_type: str


def _cpu_threads(requested: int) -> int:
    if requested:
        return requested
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def resolve_device(device: str) -> tuple[str, int]:
    """("cpu"|"cuda", index). Imports ctranslate2 (cheap) only for `auto` and CUDA requests."""
    if device == "cpu":
        return "cpu", 0
    import ctranslate2

    count = ctranslate2.get_cuda_device_count()
    if device == "auto":
        return ("cuda", 0) if count > 0 else ("cpu", 0)
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if index >= count:
        raise InvalidInput.for_field(
            "device", f"device {device!r} requested but CTranslate2 sees {count} CUDA device(s); use 'auto' or 'cpu'",
            type_="device", detail="no such CUDA device")
    return "cuda", index


def resolve_compute_type(compute_type: str, device_kind: str) -> str:
    if compute_type == "auto":
        return "float16" if device_kind == "cuda" else "int8"
    return compute_type


def probe_audio(path: Path) -> None:
    """Open the container and look for an audio stream (no decoding): bad files fail before the model loads."""
    import av

    try:
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                kinds = sorted({s.type for s in container.streams}) or ["none"]
                raise InvalidInput.for_field(
                    "audio_path", f"audio_path {str(path)!r} has no audio stream (streams: {', '.join(kinds)})",
                    type_="bad_file", detail="no audio stream")
    except av.error.FFmpegError as exc:
        raise _not_audio(path, exc) from None


def _not_audio(path: Path, exc: BaseException) -> InvalidInput:
    reason = getattr(exc, "strerror", None) or str(exc)
    return InvalidInput.for_field("audio_path", f"audio_path {str(path)!r} is not a readable audio or video file: "
                                  f"{reason}", type_="bad_file", detail="cannot decode",
                                  exception_type=type(exc).__name__)


class WhisperWorker(Worker[Args, Result]):
    name = "whisper"
    version = __version__
    Args = Args
    Result = Result
    extra = "whisper"
    requires = ("faster_whisper", "ctranslate2", "av")

    # --- cheap checks, no model ----------------------------------------------------------------------
    def check_inputs(self, args: Args) -> None:
        path = input_file(args.audio_path, "audio_path")
        probe_audio(path)
        if args.script_path is not None:
            read_script(input_file(args.script_path, "script_path"), args.script_text_field)

    model_key_fields = ("model", "device", "compute_type", "cpu_threads")

    def model_key(self, args: Args) -> str:
        kind, index = resolve_device(args.device)
        compute = resolve_compute_type(args.compute_type, kind)
        threads = _cpu_threads(args.cpu_threads)
        return f"{args.model}|{kind}:{index}|{compute}|threads={threads}"

    # --- load ------------------------------------------------------------------------------------------
    def load(self, args: Args, ctx: JobContext) -> LoadedModel:
        kind, index = resolve_device(args.device)
        compute = resolve_compute_type(args.compute_type, kind)
        if kind == "cpu" and compute in CPU_UNSUPPORTED_COMPUTE_TYPES:
            raise InvalidInput.for_field(
                "compute_type", f"compute_type {compute!r} needs CUDA, but device {args.device!r} resolved to the CPU "
                "(no CUDA device visible); use compute_type 'auto' or 'int8'",
                type_="compute_type", detail="not supported on cpu")
        model_path = resolve_model_path(args)
        ctx.progress(0.0, "loading model", model=args.model, device=kind, compute_type=compute)

        from faster_whisper import WhisperModel

        try:
            model = WhisperModel(model_path, device=kind, device_index=index, compute_type=compute,
                                 cpu_threads=_cpu_threads(args.cpu_threads))
        except ValueError as exc:  # CTranslate2: unsupported compute type for this device/backend
            raise InvalidInput.for_field("compute_type", f"cannot load {args.model!r} on {kind} with compute_type "
                                         f"{compute!r}: {exc}", type_="compute_type", detail=str(exc)) from None
        except (RuntimeError, OSError) as exc:
            if is_out_of_memory(exc):
                raise  # the runtime reports it as `resource`, whatever the stage
            if cuda_library_error(exc):
                raise ExternalError(
                    f"CUDA libraries for CTranslate2 failed to load: {exc}. CTranslate2 4.x needs CUDA 12 cuBLAS and "
                    "cuDNN 9 (`pip install nvidia-cublas-cu12 nvidia-cudnn-cu12==9.*` and put their lib dirs on "
                    "LD_LIBRARY_PATH), or use device 'cpu'.", retryable=False) from None
            if isinstance(exc, OSError) or unreadable_model(exc):
                raise ModelUnavailable(
                    f"model {args.model!r} at {model_path!r} is unreadable or corrupt: {exc}. Re-download or "
                    "re-convert it (CTranslate2 format, model.bin + tokenizer.json + config.json).",
                    details={"model": args.model, "model_path": model_path}) from None
            raise  # anything else is a bug or an environment problem the traceback explains (`internal`)
        device = f"cuda:{index}" if kind == "cuda" else "cpu"
        return LoadedModel(model=model, model_path=model_path, device=device, compute_type=compute)

    # --- run -------------------------------------------------------------------------------------------
    def run(self, model: LoadedModel, args: Args, ctx: JobContext) -> Result:
        audio = self._decode(Path(args.audio_path))
        duration_s = len(audio) / SAMPLE_RATE_HZ
        if len(audio) == 0:
            raise InvalidInput.for_field("audio_path", f"audio_path {args.audio_path!r} decodes to no audio samples",
                                         type_="bad_file", detail="no samples")
        ctx.progress(0.02, "decoded audio", audio_duration_s=round(duration_s, 3))

        t0 = time.perf_counter()
        raw_segments, info = self._transcribe(model, audio, args, ctx, duration_s)
        transcribe_s = time.perf_counter() - t0

        kept, dropped = [], 0
        for seg in raw_segments:
            if seg.no_speech_prob > args.drop_no_speech_prob and seg.avg_logprob < args.drop_avg_logprob:
                dropped += 1
            elif seg.text.strip():
                kept.append(seg)
        if dropped:
            ctx.warn(f"dropped {dropped} segment(s) that look like silence or noise (no_speech_prob > "
                     f"{args.drop_no_speech_prob} and avg_logprob < {args.drop_avg_logprob})")
        if (args.language not in ("auto", "en") or args.task == "translate") and info.language == "en" \
                and not model.model.model.is_multilingual:
            ctx.warn(f"model {args.model!r} is English-only: language/task settings were ignored")

        timed = [TimedSegment(float(s.start), float(s.end), s.text.strip(),
                              [TimedWord(w.word.strip(), float(w.start), float(w.end), float(w.probability))
                               for w in (s.words or []) if w.word.strip()])
                 for s in kept]
        fixes = fix_times(timed, duration_s)
        if not args.word_timestamps:
            cue_words = [w for seg in timed for w in spread_words(seg)]
        else:
            cue_words = [w for seg in timed for w in seg.words]
        limits = CueLimits(args.max_words_per_cue, args.max_chars_per_line, args.max_lines, args.max_cue_duration_s,
                           args.min_cue_duration_s, args.split_on_pause_s, args.split_on_punctuation)
        shaped = shape_cues(cue_words, limits, audio_end_s=duration_s)

        segments = [
            Segment(id=i, start_s=t.start_s, end_s=t.end_s, text=t.text, avg_logprob=round(float(s.avg_logprob), 4),
                    no_speech_prob=round(min(max(float(s.no_speech_prob), 0.0), 1.0), 4),
                    compression_ratio=round(float(s.compression_ratio), 4),
                    temperature=None if s.temperature is None else float(s.temperature),
                    words=[Word(word=w.text, start_s=w.start_s, end_s=w.end_s,
                                probability=round(min(max(w.probability, 0.0), 1.0), 4)) for w in t.words])
            for i, (t, s) in enumerate(zip(timed, kept, strict=True))
        ]
        cues = [Cue(index=i, start_s=c.start_s, end_s=c.end_s, lines=c.lines, word_count=len(c.words))
                for i, c in enumerate(shaped, 1)]
        text = " ".join(t.text for t in timed)
        base = args.basename or Path(args.audio_path).stem or "subtitles"
        files = OutputPaths(**{f"{fmt}_path": str(ctx.final_path(f"{base}.{fmt}")) for fmt in args.formats})
        result = Result(
            text=text, language=info.language, language_probability=round(min(max(float(info.language_probability), 0.0), 1.0), 4),
            duration_s=round(duration_s, 3),
            duration_after_vad_s=round(float(info.duration_after_vad), 3) if args.vad_filter else None,
            model=args.model, model_path=model.model_path, device=model.device, compute_type=model.compute_type,
            segments=segments, words=[w for s in segments for w in s.words], cues=cues, cue_count=len(cues),
            dropped_segments=dropped, timing_fixes=fixes, files=files,
        )
        if args.script_path is not None:
            self._time_script(result, args, ctx)

        # write: every file goes to the stage; the runtime commits them only if the job succeeds
        if "srt" in args.formats:
            write_srt(shaped, ctx.output_path(f"{base}.srt"))
        if "vtt" in args.formats:
            write_vtt(shaped, ctx.output_path(f"{base}.vtt"))
        if "txt" in args.formats:
            write_txt(text, ctx.output_path(f"{base}.txt"))
        if "json" in args.formats:
            ctx.output_path(f"{base}.json").write_text(result.model_dump_json(indent=1) + "\n", encoding="utf-8")

        ctx.extra_metrics.update(
            audio_duration_s=round(duration_s, 3),
            transcribe_s=round(transcribe_s, 4),
            real_time_factor=round(transcribe_s / duration_s, 4) if duration_s else None,
            segments=len(segments), words=len(result.words), cues=len(cues), dropped_segments=dropped,
            compute_type=model.compute_type, cpu_threads=_cpu_threads(args.cpu_threads),
        )
        ctx.progress(1.0, "done", cues=len(cues))
        return result

    @staticmethod
    def _time_script(result: Result, args: Args, ctx: JobContext) -> None:
        parts = read_script(Path(args.script_path), args.script_text_field)
        heard = [(w.word, w.start_s, w.end_s) for w in result.words]
        result.script, result.script_match_ratio = timed_script(parts, heard, result.duration_s)
        if result.script_match_ratio < LOW_MATCH_RATIO:
            ctx.warn(f"only {result.script_match_ratio:.0%} of the script's words were heard in the narration: "
                     "the script's time ranges are mostly interpolated; check that script_path matches the audio")

    @staticmethod
    def _decode(path: Path):
        import av
        from faster_whisper.audio import decode_audio

        try:
            return decode_audio(str(path), sampling_rate=SAMPLE_RATE_HZ)
        except (av.error.FFmpegError, IndexError, ValueError) as exc:  # IndexError: no audio stream
            raise _not_audio(path, exc) from None

    @staticmethod
    def _transcribe(model: LoadedModel, audio, args: Args, ctx: JobContext, duration_s: float):
        vad_parameters = None
        if args.vad_filter:
            vad_parameters = {
                "threshold": args.vad_threshold,
                "min_speech_duration_ms": args.vad_min_speech_duration_ms,
                "min_silence_duration_ms": args.vad_min_silence_duration_ms,
                "speech_pad_ms": args.vad_speech_pad_ms,
                "max_speech_duration_s": args.vad_max_speech_duration_s or float("inf"),
            }
        temperature = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] if args.temperature_fallback else [0.0]
        try:
            segments_iter, info = model.model.transcribe(
                audio,
                language=None if args.language == "auto" else args.language,
                task=args.task,
                beam_size=args.beam_size,
                temperature=temperature,
                word_timestamps=args.word_timestamps,
                vad_filter=args.vad_filter,
                vad_parameters=vad_parameters,
                initial_prompt=args.initial_prompt,
                condition_on_previous_text=args.condition_on_previous_text,
                no_speech_threshold=args.no_speech_threshold,
                log_prob_threshold=args.log_prob_threshold,
                compression_ratio_threshold=args.compression_ratio_threshold,
                hallucination_silence_threshold=args.hallucination_silence_threshold_s,
            )
            segments = []
            for seg in segments_iter:  # a lazy generator: decoding happens here
                segments.append(seg)
                if duration_s:
                    ctx.progress(0.05 + 0.9 * min(float(seg.end) / duration_s, 1.0), "transcribing", segments=len(segments))
        except RuntimeError as exc:
            if cuda_library_error(exc):
                raise ExternalError(f"CUDA libraries failed during transcription: {exc}", retryable=False) from None
            raise
        return segments, info
