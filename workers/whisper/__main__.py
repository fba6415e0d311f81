"""`python -m workers.whisper --input ARGS.json | --serve | --schema | --describe`."""

from workers.runtime import run_worker

from .worker import WhisperWorker

if __name__ == "__main__":
    run_worker(WhisperWorker())
