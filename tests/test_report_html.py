"""`storybridge report` writes a self-contained HTML report: a timeline of every attempt, the committed images as a
contact sheet with their check scores, the sink step's video embedded, a per-step table; it loads without errors
in headless Chromium and its screenshot shows the timeline and the contact sheet."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bridge_helpers import REPO, events, run_runner, schema_dir, write_manifest

from bridge import front
from bridge.report_html import FRAME_COLOURS
from bridge.report_media import committed_records, contact_sheets, sink_videos
from bridge.report_svg import MARKER_COLOURS, OUTCOME_COLOURS
from bridge.report_timeline import build_timeline, read_events
from bridge.workdir import Workdir

IMAGE_WORKER = str(REPO / "tests" / "fixtures" / "image_worker.py")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (CI installs it)")
INJECTED = "<script>window.__pwned=1</script>"
#: One distinctive colour per frame; item 1 fails its check (score 0.2), item 3 fails once before it succeeds.
COLOURS = [(0, 200, 255), (255, 120, 0), (40, 220, 60), (200, 0, 200)]
SCORES = [0.9, 0.2, 0.7, 0.8]


def _items(tmp: Path, n: int) -> list[dict]:
    return [{"color": list(COLOURS[i]), "score": SCORES[i], "fail": 1 if i == 3 else 0,
             "count": str(tmp / f"frame{i}.count"), "label": f"{INJECTED} {i}"} for i in range(n)]


def _manifest(tmp: Path, n: int, video: Path) -> dict:
    return {"version": 1, "name": "rep", "defaults": {"retry": {"max_attempts": 3, "backoff_s": [0]}},
            "workers": {"img": [sys.executable, IMAGE_WORKER]},
            "steps": [
                {"id": "list", "worker": "img", "args": {"mode": "list", "items": _items(tmp, n)},
                 "ignore_input_files": ["items"]},
                {"id": "frames", "worker": "img", "foreach": "${steps.list.result.items}",
                 "ignore_input_files": ["count_file"],
                 "args": {"mode": "frame", "color": "${item.color}", "score": "${item.score}",
                          "fail_times": "${item.fail}", "count_file": "${item.count}", "label": "${item.label}"}},
                {"id": "checks", "worker": "img", "foreach": "${steps.frames.result}",
                 "args": {"mode": "check", "image": "${item.path}", "score": "${item.score}"}},
                {"id": "final", "worker": "img", "needs": ["checks"],
                 "args": {"mode": "copy", "source": str(video), "poster_color": [250, 250, 0]}},
            ]}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """Two runs: three frames, then four (the fourth fails once and is retried; the first three are cache hits)."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg")
    tmp = tmp_path_factory.mktemp("report")
    video = tmp / "final.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=10", "-t", "0.5",
                    "-pix_fmt", "yuv420p", "-c:v", "libx264", str(video)], check=True, timeout=60)
    schemas = schema_dir(tmp)
    for n in (3, 4):
        manifest = write_manifest(tmp, _manifest(tmp, n, video))
        code, out, _ = run_runner(manifest, schemas, jobs=2)
        assert code == 0, out
    work = tmp / "rep.work"
    assert front.main(["report", str(work)]) == 0
    return {"tmp": tmp, "work": work, "video": video, "html": (work / "report.html").read_text("utf-8")}


def _last_run(work: Path) -> list[dict]:
    evs = events(work)
    return [e for e in evs if e["run_id"] == evs[-1]["run_id"]]


def test_every_attempt_is_a_bar_with_its_outcome_and_cache_hits_are_markers(run):
    html, mine = run["html"], _last_run(run["work"])
    bars = re.findall(r'<g class="attempt [a-z]+" data-step="([^"]*)" data-item="(\d*)" data-attempt="(\d+)" '
                      r'data-outcome="([a-z]+)" data-warm="([01])"', html)
    attempts = {(e["step"], str(e.get("item", "")), str(e["attempt"])) for e in mine if e["event"] == "attempt_start"}
    assert {b[:3] for b in bars} == attempts and len(bars) == len(attempts) == 5  # one lane (cpu): each drawn once
    outcomes = {b[:3]: b[3] for b in bars}
    assert outcomes[("frames", "3", "1")] == "retried" and outcomes[("frames", "3", "2")] == "ok"
    assert [b[3] for b in bars].count("ok") == 4
    hits = re.findall(r'<g class="marker cache_hit" data-step="([^"]*)" data-item="(\d*)"', html)
    assert sorted(hits) == [("checks", "0"), ("checks", "1"), ("checks", "2"), ("frames", "0"), ("frames", "1"),
                            ("frames", "2")]
    assert '<text class="lane" x="6" y="' in html and ">cpu</text>" in html and " s</text>" in html  # lane, axis


def test_contact_sheet_video_and_table(run):
    html = run["html"]
    thumbs = re.findall(r'<figure class="thumb (\w+)[^"]*" data-step="frames" data-item="(\d+)"[^>]*>'
                        r'<img src="data:image/(?:png|jpeg);base64,[^"]+"', html)
    assert [(item, frame) for frame, item in thumbs] == [("0", "pass"), ("1", "fail"), ("2", "pass"), ("3", "pass")]
    assert "score 0.200<br>no match" in html and "score 0.900<br>match" in html
    (src,) = re.findall(r'<video controls preload="metadata" src="data:video/mp4;base64,([^"]+)" '
                        r'poster="data:image/(?:png|jpeg);base64,', html)
    assert base64.b64decode(src) == run["video"].read_bytes()
    rows = re.findall(r'<tr class="\w+" data-step="([^"]+)">', html)
    assert rows == ["list", "frames", "checks", "final"]
    assert "<td>frames</td><td>committed</td><td>3/4 items</td><td>2</td>" in html  # item 3 retried once


def test_data_is_escaped_and_nothing_is_fetched(run):
    html = run["html"]
    assert "window.__pwned" in html  # the failing attempt's message is there (in its bar's hover title) ...
    assert INJECTED not in html and html.count("<script") == 1  # ... but only as text
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html) and "@import" not in html and "url(http" not in html


def test_run_picks_another_run_and_html_options(run, tmp_path, capsys):
    work = run["work"]
    first = build_timeline(read_events(work / "events.jsonl")).run_ids[0]
    out = tmp_path / "first.html"
    assert front.main(["report", str(work), "--run", first, "--html", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["html"] == str(out) and doc["steps"]["frames"]["status"] == "committed"
    page = out.read_text("utf-8")
    assert page.count('<g class="attempt ') == 8 and 'class="marker cache_hit"' not in page  # 1 + 3 + 3 + 1
    assert f"holds run {doc['run_id']}, not {first}" in page
    first_end = next(e for e in events(work) if e["event"] == "run_end" and e["run_id"] == first)
    assert f"<dt>wall</dt><dd>{first_end['wall_s']:.2f} s</dd>" in page  # the summary is the shown run's
    assert front.main(["report", str(work), "--run", "no-such-run", "--html", str(tmp_path / "x.html")]) == 2
    assert "run no-such-run is not in" in capsys.readouterr().err and not (tmp_path / "x.html").exists()
    before = (work / "report.html").stat().st_mtime_ns
    assert front.main(["report", str(work), "--no-html"]) == 0
    assert "report:" not in capsys.readouterr().out and (work / "report.html").stat().st_mtime_ns == before


def test_a_video_over_the_cap_is_linked_by_relative_path(run):
    wd = Workdir(run["work"])
    records = committed_records(wd, ["list", "frames", "checks", "final"])
    (video,) = sink_videos(wd, records, wd.root, cap_bytes=100)
    assert video.step == "final" and not video.video.embedded
    assert video.video.src == "steps/final/final.mp4" and "embedding cap" in video.video.note


def test_checks_without_image_paths_score_the_item_they_stream_from(run):
    wd = Workdir(run["work"])
    records = committed_records(wd, ["frames", "checks"])
    for rec in records["checks"].values():
        for entry in rec.result["items"]:
            del entry["path"]
    assert [t.score for t in contact_sheets(wd, records, None)["frames"]] == [None] * 4
    sheet = contact_sheets(wd, records, None, {"checks": "frames"})["frames"]
    assert [(t.item, t.score, t.match) for t in sheet] == [(i, SCORES[i], SCORES[i] >= 0.5) for i in range(4)]


def test_one_lane_per_device_with_concurrent_attempts_stacked():
    def attempt(step, item, start, end, devices):
        unit = {"run_id": "r", "step": step, "item": item, "attempt": 1}
        return [{**unit, "event": "attempt_start", "ts": start, "devices": devices},
                {**unit, "event": "attempt_end", "ts": end, "status": "committed", "warm": False}]

    evs = [{"event": "run_start", "run_id": "r", "ts": 100.0}, *attempt("a", 0, 101, 103, ["cuda:1"]),
           *attempt("a", 1, 101, 102, ["cuda:10"]), *attempt("a", 2, 101.5, 104, ["cuda:1"]),
           *attempt("b", None, 103, 104, ["cpu"]), *attempt("c", None, 102, 105, None),
           *attempt("d", None, 103.5, 104, ["cuda:0", "cuda:1"])]
    tl = build_timeline(evs)
    assert list(tl.lanes) == ["cpu", "cuda:0", "cuda:1", "cuda:10", "runner"] and tl.span_s == 5
    assert [[b.label for b in row] for row in tl.lanes["cuda:1"]] == [["a[0] #1", "d #1"], ["a[2] #1"]]
    assert len(tl.bars) == 6  # d is drawn in two lanes, counted once


def test_a_killed_runner_failed_steps_and_an_empty_workdir(run, tmp_path, capsys):
    work = tmp_path / "killed.work"
    shutil.copytree(run["work"], work)
    (work / "trace.json").unlink()  # as after SIGKILL: no trace, and the events stop mid-attempt
    lines = (work / "events.jsonl").read_text("utf-8").splitlines()
    last_end = max(i for i, line in enumerate(lines) if '"attempt_end"' in line)
    cut = json.loads(lines[last_end])
    lone = json.dumps({"event": "attempt_start", "run_id": cut["run_id"], "ts": cut["ts"], "step": "z", "attempt": 1,
                       "message": "half a pair: \ud800"})  # json.dumps writes it as an escape; it reads back
    (work / "events.jsonl").write_text("\n".join([*lines[:last_end], lone]) + "\n" + lines[last_end][:20],
                                       encoding="utf-8")
    for name in ("state.db-wal", "state.db-shm"):
        (work / ".bridge" / name).unlink(missing_ok=True)
    (work / ".bridge" / "state.db").write_bytes(b"not a database" * 100)
    assert front.main(["report", str(work)]) == 0
    assert "runner did not finish" in capsys.readouterr().out
    page = (work / "report.html").read_text("utf-8")
    assert 'data-outcome="unfinished"' in page and "no trace.json" in page and "half a pair: \\ud800" in page
    assert "committed outputs unknown" in page and "No committed image." in page
    assert "<dt>status</dt><dd>unfinished</dd>" in page

    empty = tmp_path / "empty"
    empty.mkdir()
    assert front.main(["report", str(empty)]) == 2
    assert "no run recorded" in capsys.readouterr().err and not (empty / "report.html").exists()


def test_a_failed_run_without_media(tmp_path):
    schemas = schema_dir(tmp_path)
    doc = _manifest(tmp_path, 1, tmp_path / "missing.mp4")
    doc["steps"] = [{"id": "bad", "worker": "img", "args": {"mode": "frame", "fail_times": 9, "label": INJECTED}}]
    code, _, _ = run_runner(write_manifest(tmp_path, doc), schemas)
    assert code == 1
    assert front.main(["report", str(tmp_path / "rep.work")]) == 0
    page = (tmp_path / "rep.work" / "report.html").read_text("utf-8")
    assert page.count('data-outcome="retried"') == 2 and page.count('data-outcome="failed"') == 1
    assert "No committed image." in page and "No mp4" in page and '<tr class="failed" data-step="bad">' in page
    assert INJECTED not in page and "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page


def test_quality_gate_regenerations_and_never_passed_items_are_shown(run, tmp_path):
    """The quality gate's trace fields (regenerations, gate, gate_never_passed) and events (gate_failed) as the
    runner writes them (docs/runner.md, Quality gate)."""
    work = tmp_path / "gated.work"
    shutil.copytree(run["work"], work)
    doc = json.loads((work / "trace.json").read_text("utf-8"))
    items = doc["steps"]["frames"]["items"]
    items[1].update(regenerations=2, gate={"step": "checks", "verdict": "exhausted", "history": [
        {"regeneration": r, "value": False, "score": 0.1 + r / 10} for r in range(3)]})
    items[2].update(regenerations=1, gate={"step": "checks", "verdict": "passed", "history": [
        {"regeneration": 0, "value": False, "score": 0.3}, {"regeneration": 1, "value": True, "score": 0.95}]})
    doc["gate_never_passed"] = {"frames": [1]}
    (work / "trace.json").write_text(json.dumps(doc), encoding="utf-8")
    evs = events(work)
    run_id, t = evs[-1]["run_id"], evs[-1]["ts"]
    regenerated = [  # checks[3] failed frames[3]'s first candidate: frames[3] runs again, attempt 1 again
        {"event": "gate_failed", "step": "checks", "item": 3, "regenerates": "frames", "regeneration": 0,
         "value": False, "score": 0.2, "will_regenerate": True},
        {"event": "attempt_start", "step": "frames", "item": 3, "attempt": 1, "devices": ["cpu"]},
        {"event": "attempt_end", "step": "frames", "item": 3, "attempt": 1, "status": "committed", "warm": True},
        {"event": "gate_exhausted", "step": "checks", "item": 1, "regenerates": "frames", "regeneration": 2,
         "on_exhausted": "continue"}]
    with (work / "events.jsonl").open("a", encoding="utf-8") as f:
        for i, ev in enumerate(regenerated):
            f.write(json.dumps({**ev, "ts": t + 0.1 * (i + 1), "run_id": run_id}) + "\n")
    assert front.main(["report", str(work), "--no-html", "--html", str(work / "x.html")]) == 0
    assert not (work / "x.html").exists()  # --no-html wins
    assert front.main(["report", str(work)]) == 0
    page = (work / "report.html").read_text("utf-8")
    assert page.count('<img src="data:image/') == 5  # 4 frames and the poster; a copied workdir finds its files (records name the old place)
    assert re.search(r'<figure class="thumb fail never" data-step="frames" data-item="1"', page)
    assert "regenerated 2×<br>NEVER PASSED" in page and "gate: exhausted" in page and "1 never passed the gate" in page
    assert re.search(r'<figure class="thumb pass" data-step="frames" data-item="2"[^>]*>.*?score 0.950<br>match<br>'
                     r"gate: passed<br>regenerated 1×", page)
    assert page.count('data-step="frames" data-item="3" data-attempt="1"') == 2  # the candidate and its regeneration
    assert "frames[3] #1 ↻1" in page and page.count('<g class="marker gate"') == 2


# --- in a real browser ---------------------------------------------------------------------------------------

def _chromium(tmp: Path, page: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={tmp / 'profile'}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=True)


@needs_chromium
@pytest.mark.slow
def test_the_page_loads_without_errors_in_chromium(run, tmp_path):
    dom = _chromium(tmp_path, run["work"] / "report.html", "--dump-dom").stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-ready="1"' in body and "data-errors" not in body, body
    assert 'data-attempts="5"' in body
    assert re.search(r'<pre id="report-errors" hidden="">\s*</pre>', dom)
    assert "__pwned" not in body and INJECTED not in dom  # the message is text, not an element


def _mask(image, colour: tuple[int, int, int], tolerance: int = 0):
    """Which pixels are `colour` (each channel within `tolerance`): a rows x columns boolean array."""
    import numpy as np

    return (np.abs(np.asarray(image, dtype=np.int16) - np.array(colour, dtype=np.int16)) <= tolerance).all(axis=-1)


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


@needs_chromium
@pytest.mark.slow
def test_the_screenshot_shows_the_timeline_above_the_contact_sheet(run, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    _chromium(tmp_path, run["work"] / "report.html", f"--screenshot={shot}", "--window-size=1200,1300",
              "--hide-scrollbars")
    image = Image.open(shot).convert("RGB")
    cyan_rows = _mask(image, COLOURS[0], 10).sum(axis=1).nonzero()[0]
    assert len(cyan_rows), "the first thumbnail (cyan) is not in the screenshot"
    for colour in COLOURS:  # every thumbnail shows its image, over a good part of its 168 px square
        assert _mask(image, colour, 10).sum() > 100 * 100
    sheet_top, legend = cyan_rows[0], 12 * 12  # the contact sheet's first row; each colour's legend swatch
    assert _mask(image, _rgb(OUTCOME_COLOURS["ok"]))[:sheet_top].sum() > legend + 4 * 4 * 12  # four ok bars
    assert _mask(image, _rgb(OUTCOME_COLOURS["retried"]))[:sheet_top].sum() > legend + 4 * 12  # frames[3] #1
    assert _mask(image, _rgb(MARKER_COLOURS["cache_hit"]))[:sheet_top].sum() > legend + 20  # cache-hit diamonds
    assert _mask(image, _rgb(FRAME_COLOURS["fail"]))[sheet_top:].sum() > 4 * 160  # item 1's red frame
