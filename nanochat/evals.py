"""Evaluations of finished models (`nanochat eval`): one folder each, inside the run whose model was scored.

    <run>/evals/<id>/result.json    what was scored and how, its state, times and scores (below)
    <run>/evals/<id>/metrics.jsonl  one record per finished task (a resumed evaluation skips these)
    <run>/evals/<id>/log.txt        what the evaluation printed
    <run>/evals/<id>/eval.lock      held while it runs

result.json keys: id, stage (the stage whose model was scored), checkpoint, step, tokenizer, tasks (the spec
as given), settings, state (running / done / failed / interrupted), started, finished, error, scores
({task: accuracy in 0..1}), results ({task: {kind, problems, accuracy, baseline}}), chatcore ([name, value]).
A checkpoint outside any run keeps its evaluations in `<data dir>/evals/`. The CLI, the report card and the
dashboard read these files with `records`; nothing here imports torch.
"""
import datetime
import json
from pathlib import Path

from nanochat import paths
from nanochat.atomic import atomic_write_json
from nanochat.runs import RunFileError, append_line, is_locked, read_json

STATES = ("running", "done", "failed", "interrupted")


def evals_dir(run=None) -> Path:
    """Where the evaluations of a run's models live (or of checkpoints outside any run, with run=None)."""
    return run.dir / "evals" if run is not None else paths.data_dir() / "evals"


def new_folder(root: Path, stage: str | None) -> Path:
    """A fresh `<YYYYMMDD-HHMMSS>-<stage>` folder under root (with -2, -3, ... when that second is taken)."""
    base = f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{stage or 'checkpoint'}"
    Path(root).mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        folder = Path(root) / (base if n == 1 else f"{base}-{n}")
        try:
            folder.mkdir()  # atomic: two evaluations started in the same second get two folders
            return folder
        except FileExistsError:
            continue
    raise RunFileError(f"{root} has no free evaluation folder for {base}")


def read(folder: Path) -> dict:
    """One evaluation's result.json, with `id`; a running one whose process died reads as interrupted."""
    record = {"id": Path(folder).name, **read_json(Path(folder) / "result.json")}
    if record.get("state") == "running" and not is_locked(Path(folder) / "eval.lock"):
        record["state"] = "interrupted"
    return record


def records(run=None) -> list[dict]:
    """Every evaluation of a run's models, oldest first; a damaged one is listed with state "damaged"."""
    return records_in(evals_dir(run))


def records_in(root: Path) -> list[dict]:
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(p for p in root.iterdir() if (p / "result.json").is_file()):
        try:
            found.append(read(folder))
        except RunFileError as exc:
            found.append({"id": folder.name, "state": "damaged", "error": str(exc), "scores": {}})
    return sorted(found, key=lambda r: (str(r.get("started") or ""), r["id"]))


def write(folder: Path, **fields) -> dict:
    """Update result.json (every rewrite atomic)."""
    path = Path(folder) / "result.json"
    record = {**(read_json(path) if path.exists() else {}), **fields}
    atomic_write_json(path, record)
    return record


def append_log(folder: Path, message: str) -> None:
    append_line(Path(folder) / "log.txt", message.rstrip("\n"))


def add_task_result(folder: Path, result: dict) -> None:
    """Record one finished task (metrics.jsonl, and its score in result.json) the moment it is known."""
    append_line(Path(folder) / "metrics.jsonl", json.dumps(result, ensure_ascii=False))
    path = Path(folder) / "result.json"
    write(folder, scores={**read_json(path).get("scores", {}), result["task"]: result["accuracy"]})


def task_results(folder: Path) -> dict:
    """{task: result} of the tasks already scored (a line cut by a crash is ignored: that task runs again)."""
    path = Path(folder) / "metrics.jsonl"
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            continue
        found[result["task"]] = result
    return found
