"""`python -m workers.ltx --input ARGS.json | --serve | --schema | --describe`."""

from workers.runtime import run_worker

from .worker import LtxWorker

if __name__ == "__main__":
    run_worker(LtxWorker())
