"""The installed workers, from the contract registry: who they are and whether their extra is installed.

Nothing heavy is imported: a worker module keeps torch & co. inside `load`/`run`, and a missing dependency is
found with `importlib.util.find_spec` (which does not import it). Convention: the worker class lives in
`workers.<name>.worker`, next to the contract module the registry names.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from typing import Any

from workers.contract.registry import WORKER_CONTRACT_MODULES

from .worker import Worker


class UnknownWorker(LookupError):
    pass


def worker_class(name: str, modules: dict[str, str] | None = None) -> type[Worker]:
    """The Worker subclass named `name`, from the module next to its registered contract module."""
    modules = WORKER_CONTRACT_MODULES if modules is None else modules
    if name not in modules:
        raise UnknownWorker(f"unknown worker {name!r}; installed workers: {', '.join(sorted(modules))}")
    module = importlib.import_module(modules[name].rpartition(".")[0] + ".worker")
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Worker) and getattr(value, "name", None) == name:
            return value
    raise UnknownWorker(f"{module.__name__} defines no Worker subclass named {name!r}")


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    version: str
    devices: list[str]
    warm: bool  # answers `--serve` (keeps a model loaded across requests)
    extra: str | None
    requires: list[str]
    missing: list[str]  # required modules that are not installed

    @property
    def install_hint(self) -> str | None:
        if not self.missing:
            return None
        return f"pip install 'storybridge[{self.extra}]'" if self.extra else "install: " + ", ".join(self.missing)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "installed": not self.missing, "install": self.install_hint}


def info(worker: Worker) -> WorkerInfo:
    from .cli import describe

    description = describe(worker)
    # `--describe` has no warm field (contract 1.1): every worker built on this runtime answers --serve.
    warm = bool(description.get("warm", True))
    return WorkerInfo(name=worker.name, version=worker.version, devices=description["devices"], warm=warm,
                      extra=worker.extra, requires=list(worker.requires), missing=worker.missing_modules())


def _unimportable(name: str, exc: ImportError) -> WorkerInfo:
    """A registered worker whose module does not even import (a dependency imported at its top is missing)."""
    return WorkerInfo(name=name, version="?", devices=[], warm=False, extra=None, requires=[],
                      missing=[exc.name or str(exc)])


def catalog(modules: dict[str, str] | None = None) -> list[WorkerInfo]:
    modules = WORKER_CONTRACT_MODULES if modules is None else modules
    found = []
    for name in sorted(modules):
        try:
            found.append(info(worker_class(name, modules)()))
        except ImportError as exc:  # one broken worker must not hide the others
            found.append(_unimportable(name, exc))
    return found
