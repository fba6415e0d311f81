"""Build the C# host with Mono `mcs` (what CI runs): StoryBridge.dll-free single executables per program.

    python hosts/csharp/build_mono.py OUT_DIR      # -> OUT_DIR/HostDemo.exe, OUT_DIR/StoryFlow.exe + Newtonsoft.Json.dll

Needs `mcs`/`mono` and Debian's libnewtonsoft-json5.0-cil (.ci/run installs both). The .NET 8 build is
StoryBridge.csproj (`dotnet build`), from the same sources.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NEWTONSOFT = Path("/usr/lib/cli/Newtonsoft.Json-5.0/Newtonsoft.Json.dll")
PROGRAMS = ["HostDemo", "StoryFlow"]
LIBRARY = sorted(HERE.glob("Generated/*.cs")) + sorted(HERE.glob("StoryBridge/*.cs"))


def build(out_dir: Path) -> dict[str, Path]:
    """Compile each program with the library sources; the Newtonsoft assembly is copied next to them."""
    if not NEWTONSOFT.exists():
        sys.exit(f"{NEWTONSOFT} missing: apt-get install libnewtonsoft-json5.0-cil")
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(NEWTONSOFT, out_dir / NEWTONSOFT.name)
    built = {}
    for program in PROGRAMS:
        exe = out_dir / f"{program}.exe"
        # C# 6: what quicktype emits with --csharp-version 6, and what Mono's mcs compiles without surprises.
        proc = subprocess.run(["mcs", "-langversion:6", "-nowarn:1591", f"-r:{NEWTONSOFT}", f"-out:{exe}",
                               str(HERE / f"{program}.cs"), *map(str, LIBRARY)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"mcs failed for {program}:\n{proc.stdout}{proc.stderr}")
        built[program] = exe
    return built


if __name__ == "__main__":
    for name, path in build(Path(sys.argv[1] if len(sys.argv) > 1 else "build/csharp")).items():
        sys.stdout.write(f"{name} {path}\n")
