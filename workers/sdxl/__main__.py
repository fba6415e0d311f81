"""`python -m workers.sdxl --input ARGS.json | --serve | --schema | --describe`."""

from workers.runtime import run_worker

from .worker import SdxlWorker

if __name__ == "__main__":
    run_worker(SdxlWorker())
