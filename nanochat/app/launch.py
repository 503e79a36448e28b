"""Starting and resuming runs from the dashboard: a detached `nanochat run` that outlives the dashboard.

The child gets its own session (so closing the terminal or the dashboard does not stop it) and writes
what it prints to <run>/launch.log. Stopping it is runs.stop_stage (SIGINT, like Ctrl-C). The child is
`python -m nanochat.app.launch run ...`: the `nanochat` command, with Ctrl-C's handler put back first,
because a process started from a shell that ignores SIGINT (a background job, a script) inherits that.
"""
import subprocess
import sys
from pathlib import Path

from nanochat import paths
from nanochat.runs import check_name


def launch_log(name: str) -> Path:
    return paths.runs_dir() / name / "launch.log"


def forget_refused(name: str) -> None:
    """A launch that `nanochat run` refused before the run existed leaves only its launch.log: remove it
    (after its last lines were shown), so no empty folder is left under runs/ to puzzle over."""
    folder = launch_log(name).parent
    if (folder / "run.json").exists():
        return
    launch_log(name).unlink(missing_ok=True)
    try:
        folder.rmdir()  # only when nothing else is there
    except OSError:
        pass


def run_command(name: str, preset: str | None = None, overrides=(), device: str | None = None,
                nproc: int = 1) -> list[str]:
    cmd = [sys.executable, "-m", "nanochat.app.launch", "run", "--name", name]
    if preset:
        cmd += ["--preset", preset]
    for item in overrides:
        cmd += ["--set", item]
    if device and device != "auto":
        cmd += ["--device", device]
    if nproc > 1:
        cmd += ["--nproc-per-node", str(nproc)]
    return cmd


def start(name: str, preset: str | None = None, overrides=(), device: str | None = None,
          nproc: int = 1) -> subprocess.Popen:
    """Start (preset given) or resume (preset None) run `name` in the background."""
    log = launch_log(check_name(name))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(run_command(name, preset, overrides, device, nproc), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from nanochat.cli import main
    sys.exit(main(sys.argv[1:]))
