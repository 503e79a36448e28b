"""What the dashboard shows about the runs on disk, read in a worker thread and incrementally.

`HomeWatcher.scan()` runs off the UI thread. It re-reads a run.json or status.json only when its size or
mtime changed, and of a metrics file only the bytes appended since the last scan: for every stage the
last value of each figure (its first read starts near the end of the file), and for the one stage whose
curves are on screen the whole series. A damaged file becomes a `problem` on its row; nothing raises.
"""
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from nanochat import paths
from nanochat.runs import STATES, process_alive, read_new_records

TAIL_BYTES = 1024  # a stage first seen by the list is read from its last KB: the latest figures are there
CURVES = ("loss", "val_bpb", "tok_per_s", "mfu")  # the figures drawn as curves, in the record's keys
TOTAL_KEYS = ("num_iterations", "steps")  # settings that say how many steps a stage will take


@dataclass
class StageView:
    name: str
    kind: str
    state: str
    latest: dict = field(default_factory=dict)  # the last value of each number the stage wrote
    summary: dict = field(default_factory=dict)  # the headline numbers of a finished stage (status.json)
    total: int | None = None
    problem: str | None = None
    error: str | None = None  # why it failed, from status.json
    updated: float = 0.0  # mtime of the metrics file (the age of latest's eta)

    @property
    def progress(self) -> float | None:
        if self.state == "done":
            return 1.0
        step = self.latest.get("step")
        if self.total and isinstance(step, (int, float)):
            return min(step / self.total, 1.0)
        return None

    @property
    def eta_s(self) -> float | None:
        eta = self.latest.get("eta_s")
        if self.state != "running" or not isinstance(eta, (int, float)):
            return None
        return max(eta - (time.time() - self.updated), 0.0)


@dataclass
class RunView:
    name: str
    preset: str = "?"
    state: str = "pending"
    stages: list[StageView] = field(default_factory=list)
    problem: str | None = None
    created: str = ""

    @property
    def done(self) -> int:
        return sum(s.state == "done" for s in self.stages)

    @property
    def current(self) -> StageView | None:
        """The stage that runs, else the first one not done."""
        running = [s for s in self.stages if s.state == "running"]
        return running[0] if running else next((s for s in self.stages if s.state != "done"), None)

    @property
    def eta_s(self) -> float | None:
        current = self.current
        return current.eta_s if current else None


@dataclass
class _Cached:
    key: tuple
    value: object


@dataclass
class _Tail:
    """Where we are in one metrics file."""
    inode: int = -1
    offset: int = 0
    latest: dict = field(default_factory=dict)
    problem: str | None = None
    series: dict | None = None  # figure -> ([steps], [values]); only for the stage on screen
    mtime: float = 0.0


class HomeWatcher:
    def __init__(self):
        self._json: dict[str, _Cached] = {}
        self._tails: dict[str, _Tail] = {}
        self._stages: dict[str, tuple] = {}  # stage folder -> (status.json's stat, its StageView)

    @property
    def runs_dir(self) -> Path:
        return paths.runs_dir()

    # -- files ------------------------------------------------------------------------------------
    def _read_json(self, path: str):
        """Parsed JSON, re-read only when the file changed; None when absent; raises ValueError when damaged."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._json.pop(path, None)
            return None
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._json.get(path)
        if cached is None or cached.key != key:
            try:
                with open(path, "rb") as f:
                    value = json.loads(f.read())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                value = ValueError(f"{path} is damaged ({exc})")
            except FileNotFoundError:
                return None
            except OSError as exc:  # a folder where a file should be, no permission...
                value = ValueError(f"{path} cannot be read ({exc.strerror or exc})")
            cached = self._json[path] = _Cached(key, value)
        if isinstance(cached.value, ValueError):
            raise cached.value
        return cached.value

    def _follow(self, path: str, with_series: bool) -> _Tail:
        """Read what was appended to a metrics file since the last call."""
        tail = self._tails.setdefault(path, _Tail())
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._tails[path] = _Tail()
            return self._tails[path]
        if st.st_ino != tail.inode or st.st_size < tail.offset:  # rewritten (a resumed stage trims it)
            tail = self._tails[path] = _Tail(inode=st.st_ino, offset=max(st.st_size - TAIL_BYTES, 0))
            if tail.offset:  # we start mid-file: skip to the next whole line
                with open(path, "rb") as f:
                    f.seek(tail.offset)
                    tail.offset += len(f.readline())
        if with_series and tail.series is None:  # curves wanted now: read the whole file once
            tail.series = {k: ([], []) for k in CURVES}
            records, tail.offset, problem = read_new_records(path, 0)
            self._add(tail, records)
            tail.problem = problem or tail.problem
        if st.st_size > tail.offset:
            records, tail.offset, problem = read_new_records(path, tail.offset)
            tail.problem = problem or tail.problem
            self._add(tail, records)
        tail.mtime = st.st_mtime
        return tail

    @staticmethod
    def _add(tail: _Tail, records: list[dict]) -> None:
        for record in records:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    tail.latest[key] = value
            if tail.series is not None:
                step = record.get("step")
                if not isinstance(step, (int, float)):
                    continue
                for key in CURVES:
                    value = record.get(key)
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        tail.series[key][0].append(step)
                        tail.series[key][1].append(value)

    # -- runs -------------------------------------------------------------------------------------
    def scan(self, focus: tuple[str, str] | None = None) -> list[RunView]:
        """Every run, oldest first; `focus` (run, stage) also gets its whole curves (see series())."""
        root = str(self.runs_dir)
        try:
            dirs = [d.path for d in os.scandir(root) if d.is_dir()]
        except FileNotFoundError:
            return []
        views = []
        for directory in dirs:  # plain strings, not Path: thousands of files a second add up
            try:
                created = os.stat(os.path.join(directory, "run.json")).st_mtime
            except FileNotFoundError:
                continue
            views.append((created, self._run(directory, focus)))
        views.sort(key=lambda pair: (pair[0], pair[1].name))
        return [view for _, view in views]

    def _run(self, directory: str, focus) -> RunView:
        name = os.path.basename(directory)
        view = RunView(name)
        try:
            info = self._read_json(os.path.join(directory, "run.json"))
            if not isinstance(info, dict) or not isinstance(info.get("stages"), list):
                raise ValueError(f"{os.path.join(directory, 'run.json')} is damaged (no list of stages)")
            view.preset = Path(str(info.get("preset", "?"))).stem
            view.created = str(info.get("created", ""))
            entries = info["stages"]
        except ValueError as exc:
            view.state, view.problem = "damaged", str(exc).replace(f"{directory}{os.sep}", "")
            return view
        for entry in entries:
            if not isinstance(entry, dict) or "name" not in entry:
                view.problem = "run.json has a stage entry without a name"
                continue
            view.stages.append(self._stage(directory, entry, focus == (name, entry["name"])))
        for stage in view.stages:  # paths inside the run are named from the run folder: short enough for a row
            stage.problem = stage.problem and stage.problem.replace(f"{directory}{os.sep}", "")
        problems = [s.problem for s in view.stages if s.problem]
        view.problem = view.problem or (problems[0] if problems else None)
        view.state = _run_state(view.stages)
        return view

    def _stage(self, run_dir: str, entry: dict, focused: bool) -> StageView:
        name = str(entry["name"])
        stage_dir = os.path.join(run_dir, name)
        status_path = os.path.join(stage_dir, "status.json")
        try:
            st = os.stat(status_path)
            status_key = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            status_key = None
        known = self._stages.get(stage_dir)
        if known and known[0] == status_key and known[1].state not in ("running", "stale") and not focused:
            return known[1]  # nothing moves in a stage that is not running until its status changes
        settings = entry.get("settings") if isinstance(entry.get("settings"), dict) else {}
        total = next((settings[k] for k in TOTAL_KEYS if isinstance(settings.get(k), int) and settings[k] > 0), None)
        view = StageView(name, str(entry.get("stage", name)), "pending", total=total)
        try:
            status = (self._read_json(status_path) if status_key else None) or {"state": "pending"}
            if not isinstance(status, dict) or status.get("state") not in STATES:
                raise ValueError(f"{status_path} has an unknown state "
                                 f"{status.get('state') if isinstance(status, dict) else status!r}")
            view.state = status["state"]
            view.error = status.get("error")
            if view.state == "running" and process_alive(status) is False:
                view.state, view.problem = "stale", f"process {status.get('pid')} is gone; resume the run"
            summary = status.get("summary")
            if isinstance(summary, dict):
                view.summary = {str(k): v for k, v in summary.items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool)}
                view.latest.update(view.summary)
        except ValueError as exc:
            view.state, view.problem = "damaged", str(exc)
        if view.state != "pending" or focused:
            metrics = os.path.join(stage_dir, "metrics.jsonl")
            try:
                tail = self._follow(metrics, focused)
            except OSError as exc:
                view.problem = view.problem or f"{metrics} cannot be read ({exc.strerror or exc})"
            else:
                view.latest = {**view.latest, **tail.latest}
                view.updated = tail.mtime
                view.problem = view.problem or tail.problem
        self._stages[stage_dir] = (status_key, view)
        return view

    def series(self, run: str, stage: str) -> dict:
        """The curves of a stage scanned with focus: figure -> (steps, values)."""
        tail = self._tails.get(os.path.join(self.runs_dir, run, stage, "metrics.jsonl"))
        return (tail.series if tail and tail.series else {}) or {}

    def drop_series(self, keep: tuple[str, str] | None) -> None:
        """Forget the whole curves of every stage but `keep` (memory stays one stage's worth)."""
        keep_path = os.path.join(self.runs_dir, keep[0], keep[1], "metrics.jsonl") if keep else None
        for path, tail in self._tails.items():
            if path != keep_path:
                tail.series = None


def _run_state(stages: list[StageView]) -> str:
    states = [s.state for s in stages]
    for state in ("running", "damaged", "stale", "failed", "interrupted"):
        if state in states:
            return state
    if states and all(s == "done" for s in states):
        return "done"
    return "paused" if "done" in states else "pending"  # some stages done, the rest not started


def read_evals(run_dir: Path) -> list[dict]:
    """The results of `nanochat eval` in <run>/evals/<id>/result.json, newest first; a damaged one says so."""
    rows = []
    evals = Path(run_dir) / "evals"
    for path in sorted(evals.glob("*/result.json")) if evals.is_dir() else []:
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(result, dict):
                raise ValueError("not a JSON object")
            scores = result.get("scores") if isinstance(result.get("scores"), dict) else {}
            rows.append({"id": path.parent.name, "stage": str(result.get("stage", "?")),
                         "step": result.get("step"), "state": str(result.get("state", "?")),
                         "finished": str(result.get("finished") or ""),
                         "scores": {str(k): v for k, v in scores.items() if isinstance(v, (int, float))}})
        except (OSError, ValueError) as exc:
            rows.append({"id": path.parent.name, "problem": f"{path} is damaged ({exc})"})
    return sorted(rows, key=lambda r: r.get("finished", ""), reverse=True)


def last_lines(path: Path, n: int = 5, chunk: int = 8192) -> list[str]:
    """The last n lines of a text file (reads only its end)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(size - chunk, 0))
            data = f.read()
    except FileNotFoundError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-n:]
