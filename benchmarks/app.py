"""The dashboard on a big home: time to first paint and the UI thread's time per refresh.

    python benchmarks/app.py --runs 200 --stages 10 --lines 10000 --seconds 10

Builds a home of --runs runs with --stages stages each and --lines metric lines per stage (one file
written, then hard-linked: the reader does the same work, the disk holds one copy). One stage of the
last run is "running" and a writer thread appends a metric line to it every 0.1 s while the dashboard
runs headless (Textual's run_test), so every refresh has something new to show.

Figures (one JSON document on the last line):
- first_paint_s: from starting the app to the runs table holding every run (the first scan included);
- refresh_ui_ms: the UI thread's time per refresh (median, p95, max): comparing the scan with the table
  and changing cells, and handing the curves their new points;
- curve_render_ms: the UI thread's time to draw one curve when it changed (plotext);
- scan_ms: one scan of the home in the worker thread (median), i.e. off the UI thread.
Targets from the issue: first paint under 2 s, under 20 ms per refresh.
"""
import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

try:
    import nanochat  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path[:0] = [str(Path(__file__).resolve().parents[1])]


def log(msg):
    print(msg, flush=True)


def build_home(root: Path, runs: int, stages: int, lines: int) -> Path:
    """The home, and the metrics file the writer appends to."""
    template = root / "metrics-template.jsonl"
    with open(template, "w") as f:
        for step in range(1, lines + 1):
            record = {"step": step, "loss": 3 + 4 * math.exp(-step / 2000), "smooth_loss": 3.1, "dt_ms": 812.5,
                      "tok_per_s": 524288 / 0.8125, "mfu": 0.41, "eta_s": (lines - step) * 0.8125}
            if step % 250 == 0:
                record["val_bpb"] = 0.8 + math.exp(-step / 3000)
            f.write(json.dumps(record) + "\n")
    names = [f"stage{i}" for i in range(stages)]
    plan = [{"name": n, "stage": "pretrain", "settings": {"num_iterations": lines * 2}} for n in names]
    for r in range(runs):
        run_dir = root / "runs" / f"run-{r:04d}"
        for i, name in enumerate(names):
            stage_dir = run_dir / name
            stage_dir.mkdir(parents=True)
            state = "done" if (r < runs - 1 or i < stages - 1) else "running"
            status = {"state": state, "updated": "2026-12-02T12:00:00+00:00"}
            if state == "running":
                status |= {"pid": os.getpid(), "host": os.uname().nodename}
            (stage_dir / "status.json").write_text(json.dumps(status))
            if state == "running":
                (stage_dir / "metrics.jsonl").write_bytes(template.read_bytes())
            else:
                os.link(template, stage_dir / "metrics.jsonl")
        (run_dir / "run.json").write_text(json.dumps({"name": run_dir.name, "preset": "bench", "stages": plan}))
    return root / "runs" / f"run-{runs - 1:04d}" / names[-1] / "metrics.jsonl"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--stages", type=int, default=10)
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to watch the writer")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="nanochat-app-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        live = build_home(root, args.runs, args.stages, args.lines)
        log(f"home: {args.runs} runs x {args.stages} stages x {args.lines:,} lines in {time.perf_counter() - t0:.1f}s")
        os.environ["NANOCHAT_HOME"] = str(root)
        os.environ.setdefault("NANOCHAT_PLUGINS", "")
        result = asyncio.run(measure(args, live))
    result |= {"runs": args.runs, "stages": args.stages, "lines": args.lines}
    print(json.dumps(result))


async def measure(args, live: Path) -> dict:
    from nanochat.app.app import NanochatApp
    from nanochat.app.widgets.curves import Curve

    renders = []
    original_render = Curve.render

    def timed_render(self):
        started = time.perf_counter()
        try:
            return original_render(self)
        finally:
            renders.append((time.perf_counter() - started) * 1000)
    Curve.render = timed_render

    scans = []
    original_scan = NanochatApp.scan

    def timed_scan(self, focus=None):
        started = time.perf_counter()
        try:
            return original_scan(self, focus)
        finally:
            scans.append((time.perf_counter() - started) * 1000)
    NanochatApp.scan = timed_scan

    app = NanochatApp()
    started = time.perf_counter()
    async with app.run_test(size=(160, 50)) as pilot:
        screen = app.screen
        while screen.first_paint is None or screen.query_one("#runs").row_count < args.runs:
            await pilot.pause(0.01)
        first_paint = (screen.first_paint or time.perf_counter()) - started
        log(f"first paint: {first_paint:.2f}s ({screen.query_one('#runs').row_count} rows)")
        # watch the running stage (the last run) while it writes
        screen.query_one("#runs").move_cursor(row=args.runs - 1)
        await pilot.pause(2.0)
        screen.refresh_ms.clear()
        renders.clear()
        scans.clear()
        stop = threading.Event()

        def writer():
            step = args.lines
            while not stop.is_set():
                step += 1
                with open(live, "a") as f:
                    f.write(json.dumps({"step": step, "loss": 3.0, "tok_per_s": 640000.0, "mfu": 0.41,
                                        "eta_s": 100.0}) + "\n")
                time.sleep(0.1)
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        await pilot.pause(args.seconds)
        stop.set()
        thread.join()
        shown_step = screen.stage_rows[-1][2] if screen.stage_rows else ""
    refresh = sorted(screen.refresh_ms)
    p95 = refresh[min(len(refresh) - 1, int(0.95 * len(refresh)))] if refresh else None
    log(f"{len(refresh)} refreshes: median {statistics.median(refresh):.2f} ms, p95 {p95:.2f} ms, "
        f"max {max(refresh):.2f} ms; {len(renders)} curve draws, median {statistics.median(renders or [0]):.1f} ms; "
        f"scan (worker) median {statistics.median(scans or [0]):.0f} ms; last step shown {shown_step}")
    return {"first_paint_s": round(first_paint, 3), "refreshes": len(refresh),
            "refresh_ui_ms": {"median": round(statistics.median(refresh), 2), "p95": round(p95, 2),
                              "max": round(max(refresh), 2)},
            "curve_render_ms": {"median": round(statistics.median(renders or [0]), 2),
                                "max": round(max(renders or [0]), 2), "draws": len(renders)},
            "scan_ms": {"median": round(statistics.median(scans or [0]), 1), "max": round(max(scans or [0]), 1)},
            "last_step_shown": shown_step}


if __name__ == "__main__":
    main()
