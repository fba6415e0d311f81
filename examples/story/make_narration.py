"""Re-make `narration.ogg` from `story.json` with espeak-ng (how the shipped file was made).

Each scene is spoken on its own, 0.35 s of silence goes between scenes, and the whole is encoded as Opus.
Needs the Debian packages espeak-ng and ffmpeg. Usage: python examples/story/make_narration.py [STORY] [OUT]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAUSE_S = 0.35


def main(story_path: Path, out_path: Path) -> None:
    story = json.loads(story_path.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        parts = []
        for i, scene in enumerate(story["scenes"]):
            wav = Path(tmp, f"scene{i}.wav")
            subprocess.run(["espeak-ng", "-v", story.get("voice", "en-us"), "-s", "150", "-w", str(wav),
                            scene["narration"]], check=True)
            parts.append(wav)
        inputs = [arg for wav in parts for arg in ("-i", str(wav))]
        pad = "".join(f"[{i}:a]apad=pad_dur={PAUSE_S}[a{i}];" for i in range(len(parts) - 1))
        joined = "".join(f"[a{i}]" for i in range(len(parts) - 1)) + f"[{len(parts) - 1}:a]"
        graph = f"{pad}{joined}concat=n={len(parts)}:v=0:a=1[out]"
        subprocess.run(["ffmpeg", "-y", "-loglevel", "error", *inputs, "-filter_complex", graph, "-map", "[out]",
                        "-ac", "1", "-ar", "24000", "-c:a", "libopus", "-b:a", "24k", str(out_path)], check=True)
    print(out_path)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "story.json",
         Path(sys.argv[2]) if len(sys.argv) > 2 else HERE / "narration.ogg")
