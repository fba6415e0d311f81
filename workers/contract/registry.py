"""Which workers the contract covers, and where their args/result models live.

Only contract modules are named here (pure pydantic); no worker code is imported.
"""

from __future__ import annotations

import importlib

from pydantic import BaseModel

#: worker name -> module holding `Args` and `Result` models.
WORKER_CONTRACT_MODULES: dict[str, str] = {
    "whisper": "workers.whisper.contract",
    "sdxl": "workers.sdxl.contract",
    "ltx": "workers.ltx.contract",
    "vision": "workers.vision.contract",
    "compose": "workers.compose.contract",
}


def worker_models(name: str) -> tuple[type[BaseModel], type[BaseModel]]:
    module = importlib.import_module(WORKER_CONTRACT_MODULES[name])
    return module.Args, module.Result
