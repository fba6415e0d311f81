"""Plumbing shared by the builders: staging directory, seeding, marker file, file modes, sizes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

BUILDER_VERSION = 1
SEED = 0
MARKER = "tiny.json"


def log(msg: str) -> None:
    print(f"[tiny] {msg}", file=sys.stderr, flush=True)


def seed_everything(seed: int = SEED) -> None:
    """Seed torch before constructing a model: same seed, bit-identical weights."""
    import torch

    torch.manual_seed(seed)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def make_readable(path: Path) -> None:
    """diffusers/transformers save *.safetensors with mode 0600; make every file 0644 (dirs 0755)."""
    for p in [path, *path.rglob("*")]:
        if p.is_symlink():
            continue
        p.chmod(0o755 if p.is_dir() else 0o644)


def read_marker(path: Path) -> dict | None:
    """The tiny.json marker of a model dir, or None if the dir was not built by workers.tiny."""
    try:
        return json.loads((Path(path) / MARKER).read_text())
    except (OSError, ValueError):
        return None


def check_target(out_dir: Path) -> None:
    """Raise FileExistsError unless `out_dir` is absent, empty, or an earlier tiny build (safe to replace)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not (out_dir.is_dir() and (read_marker(out_dir) is not None or not any(out_dir.iterdir()))):
        raise FileExistsError(f"{out_dir} exists and was not built by workers.tiny (no {MARKER}); "
                              "remove it or pick another directory")


@contextlib.contextmanager
def staging(out_dir: Path, name: str, info: dict) -> Iterator[Path]:
    """Build into a hidden sibling dir, then swap it in for `out_dir`.

    A failed build leaves any previous `out_dir` untouched. An existing `out_dir` is replaced only if it is
    empty or carries our marker, so a typo never deletes a real checkpoint. `info` (filled by the builder)
    goes into the marker. No timestamps, so two builds are byte-identical.
    """
    out_dir = Path(out_dir).absolute()
    check_target(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        seed_everything()
        yield tmp
        marker = {"builder": "workers.tiny", "builder_version": BUILDER_VERSION, "model": name, "seed": SEED, **info}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        make_readable(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def library_versions(*names: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for n in names:
        with contextlib.suppress(PackageNotFoundError):
            out[n] = version(n)
    return out
