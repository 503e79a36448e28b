"""A run on disk: the single source of truth that the CLI, the dashboard and the report read.

    runs/<name>/run.json                 preset, stages with their settings, versions, git commit
    runs/<name>/<stage>/status.json      pending / running / interrupted / failed / done, with times
    runs/<name>/<stage>/metrics.jsonl    one JSON object per step or evaluation
    runs/<name>/<stage>/log.txt          what the stage printed
    runs/<name>/<stage>/report.md        the stage's section of the report card
    runs/<name>/checkpoints/<stage>/     whatever the stage saves to resume and to hand on
    runs/<name>/report.md                the report card

Every rewrite is tmp-then-rename, so a file is either the old or the new version, never half.
A damaged file is reported by path and never silently replaced.
"""
import contextlib
import datetime
import fcntl
import json
import os
import re
import socket
from pathlib import Path

from nanochat import paths
from nanochat.errors import NanochatError

STATES = ("pending", "running", "interrupted", "failed", "done")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class RunError(NanochatError):
    """A problem with a run; the message names the run or file and what to do."""


class RunFileError(RunError):
    pass


class RunBusy(RunError):
    pass


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunFileError(f"{path} is damaged ({exc.msg} at line {exc.lineno}); it was left as it is. "
                           f"Repair or delete it by hand.") from None


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise RunError(f"run name {name!r} is not valid: use letters, digits, '.', '_' or '-' (at most 100)")
    return name


class Run:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.name = self.dir.name

    # -- creation and lookup --------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, info: dict) -> "Run":
        directory = paths.runs_dir() / check_name(name)
        if (directory / "run.json").exists():
            raise RunError(f"run {name!r} already exists at {directory}")
        run = cls(directory)
        atomic_write_json(run.dir / "run.json", {"name": name, "created": now(), **info})
        return run

    @classmethod
    def open(cls, name: str) -> "Run":
        directory = paths.runs_dir() / check_name(name)
        if not (directory / "run.json").exists():
            existing = ", ".join(r.name for r in list_runs()) or "none yet"
            raise RunError(f"no run named {name!r} in {paths.runs_dir()}; existing runs: {existing}")
        return cls(directory)

    @classmethod
    def exists(cls, name: str) -> bool:
        return (paths.runs_dir() / check_name(name) / "run.json").exists()

    @property
    def info(self) -> dict:
        return read_json(self.dir / "run.json")

    def update_info(self, **fields) -> None:
        atomic_write_json(self.dir / "run.json", {**self.info, **fields})

    def stages(self) -> list[dict]:
        """The planned stages in order: [{"name", "stage", "settings"}]."""
        return self.info["stages"]

    # -- per-stage files ------------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        return self.dir / stage

    def checkpoint_dir(self, stage: str) -> Path:
        return self.dir / "checkpoints" / stage

    def status(self, stage: str) -> dict:
        path = self.stage_dir(stage) / "status.json"
        if not path.exists():
            return {"state": "pending"}
        status = read_json(path)
        if status.get("state") not in STATES:
            raise RunFileError(f"{path} has unknown state {status.get('state')!r}; expected one of {STATES}")
        return status

    def set_status(self, stage: str, **fields) -> dict:
        status = {**self.status(stage), **fields, "updated": now()}
        atomic_write_json(self.stage_dir(stage) / "status.json", status)
        return status

    def append_metrics(self, stage: str, record: dict) -> None:
        append_line(self.stage_dir(stage) / "metrics.jsonl", json.dumps(record, ensure_ascii=False))

    def metrics(self, stage: str) -> list[dict]:
        path = self.stage_dir(stage) / "metrics.jsonl"
        if not path.exists():
            return []
        records = []
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if i != len(lines) - 1:  # only a last line cut by a crash is expected
                    raise RunFileError(f"{path} line {i + 1} is damaged; it was left as it is") from None
        return records

    def keep_metrics(self, stage: str, keep) -> None:
        """Drop records a resumed stage will write again (those after its checkpoint)."""
        path = self.stage_dir(stage) / "metrics.jsonl"
        if path.exists():
            kept = [json.dumps(r, ensure_ascii=False) for r in self.metrics(stage) if keep(r)]
            atomic_write_text(path, "".join(line + "\n" for line in kept))

    def append_log(self, stage: str, text: str) -> None:
        append_line(self.stage_dir(stage) / "log.txt", text.rstrip("\n"))

    # -- concurrency ----------------------------------------------------------------------------
    def lock(self):
        """Only one process drives a run at a time; a crashed holder releases the lock with its death."""
        return file_lock(self.dir / "run.lock", f"run {self.name!r}")


@contextlib.contextmanager
def file_lock(path: Path, what: str):
    """Hold an exclusive lock on `path` (created if needed) or raise RunBusy naming `what` and its holder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise RunBusy(f"{what} is being driven by {holder}; wait for it or stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)


def is_locked(path: Path) -> bool:
    """Whether a live process holds the lock file (a crashed holder's lock is gone with it)."""
    try:
        fd = os.open(path, os.O_RDONLY)  # a reader: test the lock without writing to the file
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock this test took


def append_line(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # One write of a whole line in append mode: concurrent readers see whole lines or nothing new.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode("utf-8"))
    finally:
        os.close(fd)


def list_runs() -> list[Run]:
    root = paths.runs_dir()
    if not root.exists():
        return []
    runs = [Run(d) for d in root.iterdir() if (d / "run.json").exists()]
    return sorted(runs, key=lambda r: (r.dir / "run.json").stat().st_mtime)
