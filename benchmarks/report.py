"""How long the report card of a run takes to render: the markdown alone, and with the PNG plots, each in a
fresh process (as `nanochat report` runs), plus the in-process time of each part. Prints progress, then one
JSON document as the last line.

    python benchmarks/report.py --run NAME [--runs 3]      # NAME: a run under NANOCHAT_HOME, e.g. a cpu-tiny run
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def timed(cmd: list[str], runs: int) -> dict:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3), "runs": runs}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", required=True)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from nanochat import report
    from nanochat.runs import Run
    run = Run.open(args.run)
    results = {"run": args.run, "stages": len(run.stages()),
               "metric_records": sum(len(run.metrics(s["name"])) for s in run.stages())}
    t0 = time.perf_counter()
    files = report.RunFiles(run)
    results["read_files_s"] = round(time.perf_counter() - t0, 4)
    t0 = time.perf_counter()
    report.render(files)
    results["render_markdown_s"] = round(time.perf_counter() - t0, 4)
    t0 = time.perf_counter()
    import matplotlib  # noqa: F401 — its import is part of the price of plots
    results["import_matplotlib_s"] = round(time.perf_counter() - t0, 4)
    from nanochat import report_plots
    t0 = time.perf_counter()
    drawn, _ = report_plots.draw(files, run.dir)
    results["draw_plots_s"] = round(time.perf_counter() - t0, 4)
    results["plots"] = len(drawn)
    print(f"in process: read {results['read_files_s']} s, markdown {results['render_markdown_s']} s, "
          f"matplotlib import {results['import_matplotlib_s']} s, {len(drawn)} plots {results['draw_plots_s']} s",
          flush=True)

    cli = [str(BIN / "nanochat"), "report", "--run", args.run]
    results["cli_no_plots"] = timed(cli + ["--no-plots"], args.runs)
    print(f"nanochat report --no-plots  median {results['cli_no_plots']['median_s']} s", flush=True)
    results["cli_with_plots"] = timed(cli, args.runs)
    print(f"nanochat report             median {results['cli_with_plots']['median_s']} s", flush=True)
    results["cli_help"] = timed([str(BIN / "nanochat"), "--help"], args.runs)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
