"""Model resolution shared by all workers: a local directory, or a hub id found in the local cache.

No network unless the args set `allow_download`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InvalidInput, ModelUnavailable
from .paths import check_allowed


def looks_like_path(value: str) -> bool:
    return (value.startswith((".", "~", "/", "\\")) or os.sep in value.replace("/", os.sep) and value.count("/") != 1
            or Path(value).is_absolute() or (len(value) > 1 and value[1] == ":"))


def resolve_model_dir(value: str, *, allow_download: bool = False, revision: str | None = None,
                      field: str = "model", cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """A directory holding the model files.

    `value` is a local directory, or a hub id (`org/name`) looked up in the Hugging Face cache
    (`HF_HOME`/`HF_HUB_CACHE`), downloaded only when `allow_download` is true.
    """
    candidate = Path(value).expanduser()
    if candidate.exists():
        if not candidate.is_dir():
            raise InvalidInput(f"{field} {value!r} is a file; pass the model's directory")
        return check_allowed(candidate, field)
    if looks_like_path(value):
        raise ModelUnavailable(f"{field} directory {value!r} does not exist. Pass an existing model directory "
                               "or a hub id such as 'org/name' that is in the local cache.")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:  # pragma: no cover - every model extra depends on huggingface_hub
        raise ModelUnavailable(f"{field} {value!r} is not a local directory and huggingface_hub is not installed") from None
    try:
        return Path(snapshot_download(repo_id=value, revision=revision, cache_dir=cache_dir,
                                      local_files_only=not allow_download))
    except Exception as exc:  # noqa: BLE001 - LocalEntryNotFoundError, RepositoryNotFoundError, HTTP errors
        how = (f"download it first (`hf download {value}` on a machine with hub access, then copy the cache "
               f"or the directory), pass a local directory, or set allow_download: true")
        if allow_download:
            how = "check the id and your network/token"
        raise ModelUnavailable(
            f"{field} {value!r} is not in the local Hugging Face cache ({cache_dir or HF_HUB_CACHE}): {how}",
            details={"model": value, "cache_dir": str(cache_dir or HF_HUB_CACHE), "cause": f"{type(exc).__name__}: {exc}"},
        ) from None


def resolve_diffusers_dir(value: str, *, allow_download: bool, field: str, checkpoint: str) -> Path:
    """A diffusers pipeline directory (it has `model_index.json`), or ModelUnavailable saying what to pass;
    `checkpoint` names the kind expected, e.g. "SDXL checkpoint". No torch needed."""
    path = resolve_model_dir(value, allow_download=allow_download, field=field)
    if not (path / "model_index.json").is_file():
        raise ModelUnavailable(f"{field} {value!r} ({path}) is not a diffusers pipeline directory (no model_index.json); "
                               f"pass a directory saved with save_pretrained or a hub id of a diffusers {checkpoint}",
                               details={"model": value})
    return path


def diffusers_progress_bars_off() -> None:
    """diffusers' own "Loading pipeline components" bar ignores HF_HUB_DISABLE_PROGRESS_BARS; follow it here
    (the runtime sets it unless the host did). Call from a loader: it imports diffusers."""
    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").strip().lower() in ("1", "true", "yes", "on"):
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()
