"""`python -m workers.vision --input ARGS.json | --serve | --schema | --describe`."""

from workers.runtime import run_worker

from .worker import VisionWorker

if __name__ == "__main__":
    run_worker(VisionWorker())
