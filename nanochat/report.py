"""The report card of a run: `<run>/report.md`, with PNG plots beside it, rendered from the run's files alone.

    run.json                 preset, stages, the `report` settings (hourly_cost)
    invocations.jsonl        the command line, machine, GPUs, versions, git state and codebase size of
                             every start or resume (nanochat.sysinfo)
    <stage>/status.json      state, times, headline numbers ("summary")
    <stage>/metrics.jsonl    the curves and the per-task accuracies
    <stage>/report.md        the stage's own section
    evals/<id>/result.json   evaluations run later with `nanochat eval`

The runner rewrites it after every stage and at the end of every run; `nanochat report` renders it
at any time. Every file is read defensively: a missing or damaged one turns into a line saying what
is missing, and the rest of the report still renders.
"""
import contextlib
import datetime
import json
from pathlib import Path

from nanochat import report_plots
from nanochat.atomic import atomic_write_text
from nanochat.report_plots import SOURCE_LABELS
from nanochat.runs import STATES, Run, read_jsonl

# the summary table: rows (task label in the run files -> row name); its columns are SOURCE_LABELS
SUMMARY_ROWS = {"CORE": "CORE", "arc-easy": "ARC-Easy", "arc-challenge": "ARC-Challenge", "mmlu": "MMLU",
                "gsm8k": "GSM8K", "humaneval": "HumanEval", "spellingbee": "SpellingBee"}
REPORT_SETTINGS = {"hourly_cost": float}  # US$ per hour of the whole machine; 0 = no cost estimate
STAGE_FILES = ("status.json", "metrics.jsonl", "report.md", "log.txt")


# -- settings ----------------------------------------------------------------------------------------
def split_settings(table: dict, overrides: list[str]) -> tuple[dict, list[str]]:
    """A preset's `[report]` table plus `report.KEY=VALUE` overrides -> report settings; other overrides pass on."""
    from nanochat.stages import StageError, convert
    settings, rest = {}, []
    items = [(k, v, f"[report] {k}") for k, v in (table or {}).items()]
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and key.startswith("report."):
            items.append((key.removeprefix("report."), value, f"--set {item}"))
        else:
            rest.append(item)
    for key, value, where in items:
        if key not in REPORT_SETTINGS:
            raise StageError(f"{where}: unknown report setting {key!r}; valid: "
                             f"{', '.join('report.' + k for k in REPORT_SETTINGS)}")
        settings[key] = convert(value, REPORT_SETTINGS[key], f"report.{key}")
        if settings[key] < 0:
            raise StageError(f"{where}: report.{key} must be >= 0 (US$ per hour), got {value!r}")
    return settings, rest


# -- reading the run's files defensively ------------------------------------------------------------
class RunFiles:
    """The run's files, read once; every problem is kept as a sentence instead of raised."""

    def __init__(self, run: Run):
        self.run = run
        self.problems: list[str] = []  # about the run as a whole (run.json, invocations.jsonl)
        self.info = self._json(run.dir / "run.json", self.problems, "the preset, the stages and their settings")
        self.stages = self._stages()
        self.statuses, self.status_problems, self.metrics, self.metric_problems = {}, {}, {}, {}
        for entry in self.stages:
            name = entry["name"]
            self.status_problems[name] = []
            self.statuses[name] = self._status(name, self.status_problems[name])
            self.metrics[name], self.metric_problems[name] = _jsonl(run.stage_dir(name) / "metrics.jsonl", run.dir)
        self.invocations, bad = _jsonl(run.dir / "invocations.jsonl", run.dir)
        self.invocation_problems = bad

    def _json(self, path: Path, problems: list, what: str):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return data
        except FileNotFoundError:
            problems.append(f"`{_rel(path, self.run.dir)}` is missing, so {what} are unknown")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            problems.append(f"`{_rel(path, self.run.dir)}` is damaged ({_short(exc)}), so {what} are unknown")
        return None

    def _stages(self) -> list[dict]:
        stages = (self.info or {}).get("stages")
        if isinstance(stages, list) and all(isinstance(s, dict) and "name" in s for s in stages):
            return stages
        if self.info is not None:
            self.problems.append("`run.json` has no valid `stages` list, so the stages are guessed from the folders")
        # without run.json: every folder holding stage files, roughly in the order they ran
        found = [d for d in self.run.dir.iterdir() if d.is_dir() and any((d / f).exists() for f in STAGE_FILES)]
        first = {d: min((d / f).stat().st_mtime for f in STAGE_FILES if (d / f).exists()) for d in found}
        return [{"name": d.name, "stage": None, "settings": {}} for d in sorted(found, key=lambda d: first[d])]

    def _status(self, name: str, problems: list) -> dict | None:
        directory = self.run.stage_dir(name)
        if not (directory / "status.json").exists() and not any((directory / f).exists() for f in STAGE_FILES):
            return {"state": "pending"}  # never started: nothing is missing
        status = self._json(directory / "status.json", problems, "its state, times and headline numbers")
        if status is not None and status.get("state") not in STATES:
            problems.append(f"`{name}/status.json` has an unknown state {status.get('state')!r}")
            return None
        return status

    def section(self, name: str) -> str | None:
        try:
            return (self.run.stage_dir(name) / "report.md").read_text(encoding="utf-8").rstrip()
        except (OSError, UnicodeDecodeError):
            return None


def _jsonl(path: Path, root: Path) -> tuple[list[dict], list[str]]:
    """Records of a JSON-lines file and a sentence for every line that could not be read (not raised)."""
    damaged = []
    try:
        records = read_jsonl(path, damaged)
    except OSError as exc:
        return [], [f"`{_rel(path, root)}` could not be read ({_short(exc)})"]
    return records, [f"`{_rel(path, root)}` line {i} is damaged (cut short or not JSON) and was skipped"
                     for i in damaged]


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def _short(exc) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


# -- numbers -----------------------------------------------------------------------------------------
def _time(text):
    try:
        return datetime.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None


def attempt_end(status: dict, stage_dir: Path | None = None):
    """When the latest attempt ended: its `finished` time or, for one that never finished (still running, or
    killed), the last write to its stage folder."""
    end = _time(status.get("finished"))
    if end is None and stage_dir is not None:
        mtimes = [(stage_dir / f).stat().st_mtime for f in STAGE_FILES if (stage_dir / f).exists()]
        end = datetime.datetime.fromtimestamp(max(mtimes)).astimezone() if mtimes else None
    return end or _time(status.get("updated"))


def attempt_seconds(status: dict, stage_dir: Path | None = None) -> float:
    """Seconds of the latest attempt, started -> attempt_end()."""
    start, end = _time(status.get("started")), attempt_end(status, stage_dir)
    if start is None or end is None:
        return 0.0
    return max((end - start).total_seconds(), 0.0)


def stage_seconds(status: dict, stage_dir: Path | None = None) -> float:
    """Wall-clock seconds a stage has taken over all its attempts (resumes add up)."""
    earlier = status.get("earlier_seconds") or 0.0
    return float(earlier) + attempt_seconds(status, stage_dir)


def hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def _gib(n) -> str:
    return f"{n / 2**30:.1f} GiB" if isinstance(n, (int, float)) and n else "?"


def _origin(source: dict) -> str:
    where = f"run {source['run']}, stage {source['stage']}" if source.get("run") else "a checkpoint"
    return f"{where} (step {source['step']}): {source['checkpoint']}; tokenizer {source['tokenizer']}"


# -- sections ----------------------------------------------------------------------------------------
def _header(files: RunFiles) -> list[str]:
    info = files.info or {}
    lines = [f"# nanochat report: {files.run.name}", "",
             f"- generated: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}"]
    if files.info is not None:
        lines += [f"- preset: {info.get('preset')}" + (f" ({info['description']})" if info.get("description") else ""),
                  f"- created: {info.get('created')}"]
        if info.get("overrides"):
            lines.append("- overrides: " + " ".join(f"`{o}`" for o in info["overrides"]))
        if info.get("from"):
            lines.append(f"- started from: {_origin(info['from'])}")
    lines += [f"- **missing:** {p}" for p in files.problems]
    return lines


def _environment(files: RunFiles) -> list[str]:
    lines = ["## Environment", ""]
    lines += [f"- **missing:** {p}" for p in files.invocation_problems]
    if not files.invocations:
        versions = (files.info or {}).get("versions", {})
        lines.append("- **missing:** `invocations.jsonl` (written when `nanochat run` starts or resumes the run) is "
                     "missing or empty, so the command line, the machine and its GPUs are unknown")
        if versions:
            lines.append(f"- from run.json: nanochat {versions.get('nanochat')}, python {versions.get('python')}, "
                         f"torch {versions.get('torch')}, git {versions.get('git_commit') or 'n/a'}")
        return lines
    last = files.invocations[-1]
    cpu, git = last.get("cpu") or {}, last.get("git")
    gpus = last.get("gpus") or []
    if gpus:
        names = sorted({g.get("name", "?") for g in gpus})
        total = sum(g.get("memory_bytes") or 0 for g in gpus)
        gpu_line = f"{len(gpus)} x {', '.join(names)} ({_gib(total / len(gpus))} each, {_gib(total)} in all)"
    else:
        gpu_line = "none"
    procs = last.get("processes") or {}
    lines += [
        f"- command: `{last.get('command', '?')}`",
        f"- git: {git['commit']} on {git.get('branch')}, {'**dirty** (uncommitted changes)' if git.get('dirty') else 'clean'}"
        f" — {git.get('subject', '')}" if git else "- git: not a git checkout (commit unknown)",
        f"- host: {last.get('host')}; {last.get('platform')}",
        f"- CPU: {cpu.get('model', '?')}, {cpu.get('physical_cores') or '?'} physical / "
        f"{cpu.get('logical_cores') or '?'} logical cores; RAM {_gib(last.get('ram_bytes'))}",
        f"- GPU: {gpu_line}",
        f"- processes: {procs.get('nproc_per_node', 1)} per node x {procs.get('nnodes', 1)} node(s)",
        f"- software: python {last.get('python')}, torch {last.get('torch')}, CUDA {last.get('cuda') or 'none'}, "
        f"nanochat {last.get('nanochat')}",
    ]
    if len(files.invocations) > 1:
        lines += ["", "Every start and resume of this run:", "", "| time | command | host | git |", "|---|---|---|---|"]
        for inv in files.invocations:
            g = inv.get("git") or {}
            commit = (g.get("commit", "") + ("-dirty" if g.get("dirty") else "")) or "-"
            lines.append(f"| {inv.get('time')} | `{inv.get('command')}` | {inv.get('host')} | {commit} |")
    return lines


def _codebase(files: RunFiles) -> list[str]:
    lines = ["## Codebase", ""]
    size = next((inv.get("codebase") for inv in reversed(files.invocations) if inv.get("codebase")), None)
    if not size:
        return lines + ["- **missing:** the codebase size is recorded in `invocations.jsonl` when a run starts, "
                        "and there is none"]
    deps = size.get("dependencies") or []
    return lines + [f"- characters: {size['chars']:,}", f"- lines: {size['lines']:,}", f"- files: {size['files']:,}",
                    f"- tokens (approximately, characters / 4): {size['tokens']:,}",
                    f"- dependencies: {len(deps)} ({', '.join(deps)})" if deps else "- dependencies: unknown"]


def summary_table(files: RunFiles) -> tuple[dict, list[str]]:
    """{row: {column: value}} for the summary table, and notes (non-standard ChatCORE, missing numbers)."""
    table: dict[str, dict[str, str]] = {row: {} for row in [*SUMMARY_ROWS.values(), "ChatCORE"]}
    notes = []
    for entry in files.stages:
        kind, name = entry.get("stage"), entry["name"]
        status = files.statuses.get(name) or {}
        summary = status.get("summary") or {}
        if kind == "core-eval":
            core = summary.get("CORE", next((m["CORE"] for m in reversed(files.metrics[name]) if "CORE" in m), None))
            if core is not None:
                table["CORE"]["BASE"] = f"{core:.4f}"
        elif kind == "chat-eval":
            source = (entry.get("settings") or {}).get("source", "sft")
            column = SOURCE_LABELS.get(source, source.upper())
            accuracies = {m["task"]: m["accuracy"] for m in files.metrics[name] if "task" in m and "accuracy" in m}
            accuracies.update({k: v for k, v in summary.items() if not k.startswith("ChatCORE")})
            for task, acc in accuracies.items():
                row = SUMMARY_ROWS.get(task, task)
                if isinstance(acc, (int, float)):
                    table.setdefault(row, {})[column] = f"{acc:.4f}"
            if "ChatCORE" in summary:
                table["ChatCORE"][column] = f"{summary['ChatCORE']:.4f}"
            elif "ChatCORE (these tasks)" in summary:
                table["ChatCORE"][column] = f"{summary['ChatCORE (these tasks)']:.4f}*"
                notes.append(f"- \\* {column}: ChatCORE (these tasks), over the tasks stage {name!r} ran "
                             f"({', '.join(accuracies)}), not the standard set")
            elif files.statuses.get(name) is None:
                notes.append(f"- {column}: ChatCORE unknown because `{name}/status.json` is missing or damaged")
    return table, notes


def _summary(files: RunFiles) -> list[str]:
    table, notes = summary_table(files)
    columns = list(SOURCE_LABELS.values())
    columns += sorted({c for cells in table.values() for c in cells} - set(columns))
    rows = [*SUMMARY_ROWS.values()] + [r for r in table if r not in SUMMARY_ROWS.values() and r != "ChatCORE"]
    lines = ["## Summary", "", "| metric | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for row in rows + ["ChatCORE"]:
        lines.append(f"| {row} | " + " | ".join(table.get(row, {}).get(c, "-") for c in columns) + " |")
    if files.info is None:
        notes.append("- which stage fed which column is unknown without `run.json`")
    return lines + ([""] + notes if notes else [])


def _wall_clock(files: RunFiles, hourly_cost) -> list[str]:
    lines = ["## Wall clock and cost", "", "| stage | state | attempts | wall clock |", "|---|---|---|---|"]
    total = 0.0
    for entry in files.stages:
        name, status = entry["name"], files.statuses.get(entry["name"])
        if status is None:
            lines.append(f"| {name} | ? (status.json missing or damaged) | ? | ? |")
            continue
        seconds = stage_seconds(status, files.run.stage_dir(name)) if status.get("state") != "pending" else 0.0
        total += seconds
        lines.append(f"| {name} | {status.get('state')} | {status.get('attempts', 0)} | "
                     f"{hms(seconds) if status.get('state') != 'pending' else '-'} |")
    lines += ["", f"- total wall clock (stages): **{hms(total)}** ({total / 3600:.2f} h)"]
    starts = [_time(inv.get("time")) for inv in files.invocations] + [_time((files.info or {}).get("created"))]
    ends = [attempt_end(status, files.run.stage_dir(name)) for name, status in files.statuses.items()
            if status and status.get("state") != "pending"]
    starts, ends = [t for t in starts if t], [t for t in ends if t]
    if starts and ends and max(ends) > min(starts):
        lines.append(f"- from the run's start to its latest stage's end: {hms((max(ends) - min(starts)).total_seconds())}"
                     " (pauses between resumes included)")
    if hourly_cost:
        lines.append(f"- estimated cost: **${total / 3600 * hourly_cost:,.2f}** ({total / 3600:.2f} h x "
                     f"${hourly_cost:,.2f}/h, the `report.hourly_cost` setting)")
    else:
        lines.append("- estimated cost: not set; give the machine's price per hour with `--set report.hourly_cost=24` "
                     "on `nanochat run` or `nanochat report --hourly-cost 24`")
    return lines


def _stage_sections(files: RunFiles) -> list[str]:
    lines = []
    for entry in files.stages:
        name = entry["name"]
        status, problems = files.statuses.get(name), files.status_problems.get(name, [])
        problems = problems + files.metric_problems.get(name, [])
        section = files.section(name)
        state = (status or {}).get("state")
        if section is None and state == "pending" and not problems:
            continue  # not run yet: nothing to show, nothing missing
        if section is None:
            lines += ["", f"## {name}", ""]
            if state == "done" or status is None:
                lines.append(f"- **missing:** `{name}/report.md`, the stage's own section")
            else:
                lines.append(f"- state: {_state(status, files.run.stage_dir(name))}")
        else:
            lines += ["", section]
            if state in ("failed", "interrupted", "running"):
                lines += ["", f"- state now: {_state(status, files.run.stage_dir(name))}"]
        if problems:
            lines += [""] + [f"- **missing:** {p}" for p in problems]
    return lines


def _state(status: dict, stage_dir: Path) -> str:
    state = status.get("state")
    if state == "running":  # or killed without a word: only the last write tells
        end = attempt_end(status, stage_dir)
        return f"running (last written to {end.isoformat(timespec='seconds') if end else '?'})"
    return state + (f" — {status['error']}" if status.get("error") else "")


def _evaluations(files: RunFiles) -> list[str]:
    """`nanochat eval` results: evals/<id>/result.json with stage, step, state, started, finished, scores."""
    root = files.run.dir / "evals"
    if not root.is_dir():
        return []
    lines = ["", "## Evaluations (nanochat eval)", "", "| eval | model | step | state | time | scores |",
             "|---|---|---|---|---|---|"]
    for directory in sorted(d for d in root.iterdir() if d.is_dir()):
        problems = []
        result = files._json(directory / "result.json", problems, "this evaluation's model and scores")
        if result is None:
            lines.append(f"| {directory.name} | ? | ? | ? | ? | **missing:** {problems[0]} |")
            continue
        scores = result.get("scores") if isinstance(result.get("scores"), dict) else {}
        text = ", ".join(f"{k} {v:.4f}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in scores.items())
        seconds = attempt_seconds({"started": result.get("started"), "finished": result.get("finished")})
        lines.append(f"| {directory.name} | {result.get('stage', '?')} | {result.get('step', '?')} | "
                     f"{result.get('state', '?')} | {hms(seconds) if seconds else '-'} | {text or '-'} |")
    return lines


def _plots(files: RunFiles, plots) -> list[str]:
    lines = ["", "## Plots", ""]
    if plots is None:
        return lines + ["- drawn when the run finishes, or now with `nanochat report`"]
    drawn, notes = plots
    lines += [f"- **missing:** {note}" for note in notes]
    if not drawn and not notes:
        lines.append("- nothing to plot yet (no stage has written metrics)")
    for title, filename in drawn:
        lines += [f"### {title}", "", f"![{title}]({filename})", ""]
    return lines[:-1] if drawn else lines


def _safely(title: str, build, *args) -> list[str]:
    """One section; a bug or a surprise in one file costs that section only."""
    try:
        return build(*args)
    except Exception as exc:  # noqa: BLE001 — the report must render whatever a file holds
        return [f"## {title}", "", f"- **could not be rendered:** {type(exc).__name__}: {_short(exc)}"]


# -- the whole report --------------------------------------------------------------------------------
def render(run: Run, plots=None, hourly_cost: float | None = None) -> str:
    """The markdown; `plots` = ([(title, file name)], notes) already drawn, or None when they are drawn later."""
    files = run if isinstance(run, RunFiles) else RunFiles(run)
    if hourly_cost is None:
        hourly_cost = ((files.info or {}).get("report") or {}).get("hourly_cost")
    parts = [_safely("nanochat report", _header, files), [""], _safely("Environment", _environment, files), [""],
             _safely("Codebase", _codebase, files), [""], _safely("Summary", _summary, files), [""],
             _safely("Wall clock and cost", _wall_clock, files, hourly_cost),
             _safely("Plots", _plots, files, plots), _safely("Stages", _stage_sections, files),
             _safely("Evaluations (nanochat eval)", _evaluations, files)]
    return "\n".join(line for part in parts for line in part).rstrip() + "\n"


def write(run: Run, plots: bool = True, hourly_cost: float | None = None) -> Path:
    """Write `<run>/report.md`, and with `plots` the PNG files beside it (matplotlib, imported only then)."""
    files = RunFiles(run)
    drawn = None
    if plots:
        drawn = report_plots.draw(files, run.dir)
    path = run.dir / "report.md"
    atomic_write_text(path, render(files, drawn, hourly_cost))
    return path


@contextlib.contextmanager
def written_after(run: Run):
    """Rewrite the report when the block ends: with plots when it went well, the text alone when it failed."""
    try:
        yield
    except BaseException:
        write(run, plots=False)
        raise
    write(run)
