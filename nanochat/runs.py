"""A run on disk: the single source of truth that the CLI, the dashboard and the report read.

    runs/<name>/run.json                 preset, stages with their settings, versions, git commit
    runs/<name>/invocations.jsonl        one line per `nanochat run` start or resume: command, machine, git
    runs/<name>/<stage>/status.json      pending / running / interrupted / failed / done, with times
    runs/<name>/<stage>/metrics.jsonl    one JSON object per step or evaluation
    runs/<name>/<stage>/log.txt          what the stage printed
    runs/<name>/<stage>/report.md        the stage's section of the report card
    runs/<name>/checkpoints/<stage>/     whatever the stage saves to resume and to hand on
    runs/<name>/report.md                the report card

Every rewrite goes through nanochat.atomic, so a file is either the old or the new version, never half.
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

from nanochat import faults, paths
from nanochat.atomic import atomic_write_json, atomic_write_text
from nanochat.errors import NanochatError

STATES = ("pending", "running", "interrupted", "failed", "done")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class RunError(NanochatError):
    """A problem with a run; the message names the run or file and what to do."""


class RunFileError(RunError):
    pass


class RunBusy(RunError):
    pass


class RunExists(RunError):
    pass


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


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
            raise RunExists(f"run {name!r} already exists at {directory}")
        run = cls(directory)
        tmp = run.dir / f".run.json.new{os.getpid()}"
        atomic_write_json(tmp, {"name": name, "created": now(), **info})
        try:  # a link never replaces: of two nodes creating the run on a shared disk, one creates, one is told
            os.link(tmp, run.dir / "run.json")
        except FileExistsError:
            raise RunExists(f"run {name!r} already exists at {directory}") from None
        finally:
            tmp.unlink()
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
        faults.hit("status")
        atomic_write_json(self.stage_dir(stage) / "status.json", status)
        return status

    def append_metrics(self, stage: str, record: dict) -> None:
        faults.hit("metrics")
        append_line(self.stage_dir(stage) / "metrics.jsonl", json.dumps(record, ensure_ascii=False))

    def metrics(self, stage: str) -> list[dict]:
        return read_jsonl(self.stage_dir(stage) / "metrics.jsonl")

    def keep_metrics(self, stage: str, keep) -> None:
        """Drop records a resumed stage will write again (those after its checkpoint)."""
        path = self.stage_dir(stage) / "metrics.jsonl"
        if path.exists():
            kept = [json.dumps(r, ensure_ascii=False) for r in self.metrics(stage) if keep(r)]
            atomic_write_text(path, "".join(line + "\n" for line in kept))

    def append_log(self, stage: str, text: str) -> None:
        append_line(self.stage_dir(stage) / "log.txt", text.rstrip("\n"))

    def record_invocation(self, record: dict) -> None:
        """What started or resumed this run (`nanochat.sysinfo.capture()`), for the report card."""
        append_line(self.dir / "invocations.jsonl", json.dumps(record, ensure_ascii=False))

    def invocations(self) -> list[dict]:
        return read_jsonl(self.dir / "invocations.jsonl")

    # -- concurrency ----------------------------------------------------------------------------
    def lock(self, node: int = 0):
        """Only one process drives a run at a time; a crashed holder releases the lock with its death.

        Each node of a multi-node run has its own driver and lock file (on a shared disk they are side by side).
        """
        if node == 0:
            return file_lock(self.dir / "run.lock", f"run {self.name!r}")
        return file_lock(self.dir / f"run.node{node}.lock", f"node {node} of run {self.name!r}")


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
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {now()}".encode(), 0)
        yield
    finally:
        os.close(fd)


def read_jsonl(path: Path, damaged: list | None = None) -> list[dict]:
    """The records of a JSON-lines file. A last line cut by a crash is dropped; any other damaged line is an
    error naming it, unless `damaged` is a list: then every damaged line's number goes there and is skipped."""
    if not path.exists():
        return []
    records = []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            records.append(record)
        except ValueError:
            if damaged is not None:
                damaged.append(i + 1)
            elif i != len(lines) - 1:  # only a last line cut by a crash is expected
                raise RunFileError(f"{path} line {i + 1} is damaged; it was left as it is") from None
    return records


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
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        _drop_cut_line(fd)
        os.write(fd, (line + "\n").encode("utf-8"))
    finally:
        os.close(fd)


def _drop_cut_line(fd: int) -> None:
    """A line cut short by a crash (no newline) was never a whole record: drop it, or the next line would join it."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    tail = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20)))
    cut = tail.rfind(b"\n")
    os.ftruncate(fd, size - len(tail) + cut + 1 if cut >= 0 else 0)


def list_runs() -> list[Run]:
    root = paths.runs_dir()
    if not root.exists():
        return []
    runs = [Run(d) for d in root.iterdir() if (d / "run.json").exists()]
    return sorted(runs, key=lambda r: (r.dir / "run.json").stat().st_mtime)


# -- for watchers (the dashboard): new metric lines, is the process alive, stop it, disk use ----------
def read_new_records(path: Path, offset: int) -> tuple[list[dict], int, str | None]:
    """The records appended to a .jsonl file since byte `offset`: (records, new offset, problem or None).

    A last line without its newline is being written: it is left for the next call. A damaged whole line
    is skipped and named in `problem`, so one bad line never hides the rest. A file that shrank (a resumed
    stage rewrote it) is read again from the start: the caller sees new offset < old offset.
    """
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return [], 0, None
    if size < offset:
        offset = 0
    if size == offset:
        return [], offset, None
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size - offset)
    end = data.rfind(b"\n") + 1
    try:  # one decode for the whole chunk (much faster than per line); bytes that are not UTF-8: per line
        lines = [(line, len(line.encode())) for line in data[:end].decode("utf-8").split("\n")[:-1]]
    except UnicodeDecodeError:
        lines = [(line, len(line)) for line in data[:end].split(b"\n")[:-1]]
    records, problem, at = [], None, offset
    for line, size in lines:
        try:
            record = json.loads(line) if line.strip() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if not isinstance(record, dict):
            problem = f"{path} has a damaged line at byte {at}; it was skipped"
        elif record:
            records.append(record)
        at += size + 1
    return records, offset + end, problem


def process_alive(status: dict) -> bool | None:
    """Whether the process a "running" status names is alive: None when it runs on another host (unknown)."""
    pid = status.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return None
    if status.get("host") not in (None, socket.gethostname()):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def stop_stage(run: "Run") -> tuple[str, int]:
    """Stop the running stage of `run` the way Ctrl-C does: SIGINT to the runner's process group, so the
    stage (and any torchrun workers) end "interrupted" at a point they resume from. Returns (stage, pid)."""
    import signal
    for entry in run.stages():
        status = run.status(entry["name"])
        if status["state"] != "running":
            continue
        alive = process_alive(status)
        if alive is None:
            raise RunError(f"stage {entry['name']!r} of run {run.name!r} runs on {status.get('host')!r}, not on "
                           f"this machine; stop it there")
        if not alive:
            raise RunError(f"stage {entry['name']!r} of run {run.name!r} says running but its process "
                           f"{status['pid']} is gone (killed or crashed); resume the run to continue it")
        pid = status["pid"]
        group = os.getpgid(pid)
        if group == os.getpgrp():  # started from our own terminal job: signal only the runner
            os.kill(pid, signal.SIGINT)
        else:
            os.killpg(group, signal.SIGINT)
        return entry["name"], pid
    raise RunError(f"run {run.name!r} has no running stage to stop")


def disk_usage(path: Path) -> int:
    """Bytes used by the files under `path` (0 when it does not exist)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:  # removed while we walked (a checkpoint being pruned)
                pass
    return total
