"""`python -m workers.compose --input ARGS.json | --serve | --schema | --describe`."""

from workers.runtime import run_worker

from .worker import ComposeWorker

if __name__ == "__main__":
    run_worker(ComposeWorker())
