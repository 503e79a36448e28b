"""The report card of a run: one markdown file assembled from what the stages wrote.

Each stage writes its own section (`<stage>/report.md`) and may add headline numbers to its status
(`"summary": {"CORE": 0.12, ...}`); this module puts them together with a header and a summary
table, so the report can be rebuilt at any time from the files alone.
"""
import datetime

from nanochat.runs import Run, atomic_write_text


def _duration(status: dict) -> str:
    try:
        start = datetime.datetime.fromisoformat(status["started"])
        end = datetime.datetime.fromisoformat(status["finished"])
    except (KeyError, TypeError, ValueError):
        return "-"
    seconds = int((end - start).total_seconds())
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def _origin(source: dict) -> str:
    where = f"run {source['run']}, stage {source['stage']}" if source.get("run") else "a checkpoint"
    return f"{where} (step {source['step']}): {source['checkpoint']}; tokenizer {source['tokenizer']}"


def render(run: Run) -> str:
    info = run.info
    v = info.get("versions", {})
    lines = [f"# nanochat report: {run.name}", "",
             f"- preset: {info.get('preset')}",
             f"- created: {info.get('created')} on {info.get('host', '?')}",
             *([f"- started from: {_origin(info['from'])}"] if info.get("from") else []),
             f"- nanochat {v.get('nanochat')}, git {v.get('git_commit') or 'n/a'}, "
             f"python {v.get('python')}, torch {v.get('torch')}",
             "", "## Stages", "", "| stage | state | time |", "|---|---|---|"]
    statuses = {s["name"]: run.status(s["name"]) for s in run.stages()}
    for name, status in statuses.items():
        lines.append(f"| {name} | {status['state']} | {_duration(status)} |")
    summary = [(name, key, val) for name, st in statuses.items() for key, val in st.get("summary", {}).items()]
    if summary:
        lines += ["", "## Summary", "", "| stage | metric | value |", "|---|---|---|"]
        lines += [f"| {name} | {key} | {_fmt(val)} |" for name, key, val in summary]
    for name in statuses:
        section = run.stage_dir(name) / "report.md"
        if section.exists():
            lines += ["", section.read_text(encoding="utf-8").rstrip()]
    return "\n".join(lines) + "\n"


def write(run: Run) -> None:
    atomic_write_text(run.dir / "report.md", render(run))
