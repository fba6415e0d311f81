"""Model resolution shared by all workers: local directory, or a hub id from the local cache only."""

from __future__ import annotations

import pytest

from workers.contract import ErrorKind
from workers.runtime.errors import WorkerError
from workers.runtime.models import resolve_model_dir


def _fake_cache(root, repo_id: str, commit: str = "0" * 40):
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def test_local_directory_is_used_as_is(tmp_path):
    (tmp_path / "m").mkdir()
    assert resolve_model_dir(str(tmp_path / "m")) == (tmp_path / "m").resolve()


def test_a_file_is_invalid_input(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(WorkerError) as info:
        resolve_model_dir(str(tmp_path / "weights.bin"))
    assert info.value.kind == ErrorKind.invalid_input


def test_missing_local_path_is_model_unavailable(tmp_path):
    with pytest.raises(WorkerError) as info:
        resolve_model_dir(str(tmp_path / "nope"))
    assert info.value.kind == ErrorKind.model_unavailable and "does not exist" in info.value.message


def test_hub_id_resolves_from_local_cache_without_network(tmp_path):
    snapshot = _fake_cache(tmp_path, "acme/tiny-model")
    assert resolve_model_dir("acme/tiny-model", cache_dir=tmp_path) == snapshot


def test_uncached_hub_id_is_model_unavailable_with_instructions(tmp_path):
    with pytest.raises(WorkerError) as info:
        resolve_model_dir("acme/not-downloaded", cache_dir=tmp_path)
    err = info.value
    assert err.kind == ErrorKind.model_unavailable and err.retryable is False
    assert "hf download acme/not-downloaded" in err.message and "allow_download" in err.message
