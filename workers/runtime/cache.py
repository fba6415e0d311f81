"""The warm model cache: models stay loaded across requests while their key is unchanged."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class ModelCache:
    """LRU of loaded models. Default capacity 1: a GPU rarely holds two big pipelines."""

    def __init__(self, capacity: int = 1, on_evict: Callable[[Any], None] | None = None):
        self.capacity = max(1, capacity)
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._on_evict = on_evict
        self.loads = 0

    def keys(self) -> list[str]:
        return list(self._models)

    def get_or_load(self, key: str, load: Callable[[], Any]) -> tuple[Any, bool]:
        """(model, cache_hit)."""
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key], True
        while len(self._models) >= self.capacity:  # evict before loading, to free memory first
            _, old = self._models.popitem(last=False)
            if self._on_evict is not None:
                self._on_evict(old)
            del old  # no reference may survive into load(): two big pipelines must never coexist
        model = load()
        self.loads += 1
        self._models[key] = model
        return model, False

    def clear(self) -> None:
        while self._models:
            _, old = self._models.popitem(last=False)
            if self._on_evict is not None:
                self._on_evict(old)
