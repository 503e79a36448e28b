"""What the machine and the code were when a run started: the facts the report card needs later.

`capture()` is called each time `nanochat run` starts or resumes a run, and its answer is stored as one
line of `<run>/invocations.jsonl`, because the report renders from the run's files alone: the command
line, the git state, the CPU, RAM and GPUs, the torch and CUDA versions and the size of the codebase
exist only at that moment. Every probe is best effort: a fact that cannot be read is None, never an error.
"""
import os
import platform
import shlex
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from nanochat import __version__

SOURCE_ROOT = Path(__file__).resolve().parent.parent
# what counts as the codebase: the source files a reader would read (not data, locks or build output)
CODE_SUFFIXES = (".py", ".md", ".rs", ".toml", ".sh", ".html", ".css", ".tcss", ".js")
SKIP_DIRS = {".git", ".venv", "venv", "target", "build", "dist", "node_modules", "__pycache__", ".pytest_cache"}


def capture(launch=None) -> dict:
    """One record of this invocation (JSON-ready)."""
    from nanochat.runs import now
    cpu = cpu_info()
    return {
        "time": now(),
        "command": command_line(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "nanochat": __version__,
        **torch_info(),
        "cpu": cpu,
        "ram_bytes": ram_bytes(),
        "gpus": gpus(),
        "processes": ({"nproc_per_node": launch.nproc_per_node, "nnodes": launch.nnodes} if launch else None),
        "git": git_state(),
        "codebase": codebase_size(),
    }


def command_line() -> str:
    """`nanochat run ...` as typed (the console script's name, not its path); `python -m ...` for modules."""
    argv = list(sys.argv) or ["?"]
    if argv[0].endswith(".py") and getattr(sys, "orig_argv", None):
        argv = list(sys.orig_argv)
    argv[0] = Path(argv[0]).name
    return shlex.join(argv)


def cpu_info() -> dict:
    from nanochat.backend import cpu_name
    return {"model": cpu_name(), "logical_cores": os.cpu_count(), "physical_cores": _physical_cores()}


def _physical_cores() -> int | None:
    try:  # Linux: distinct (physical id, core id) pairs
        cores, socket_id = set(), "0"
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "physical id":
                socket_id = value.strip()
            elif key == "core id":
                cores.add((socket_id, value.strip()))
        if cores:
            return len(cores)
    except OSError:
        pass
    if sys.platform == "darwin":
        return _int(_output(["sysctl", "-n", "hw.physicalcpu"]))
    return None


def ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return _int(_output(["sysctl", "-n", "hw.memsize"])) if sys.platform == "darwin" else None


def torch_info() -> dict:
    """torch's version and the CUDA it was built with; importing torch is fine here (the run needs it anyway)."""
    try:
        import torch
    except ImportError:
        return {"torch": None, "cuda": None}
    return {"torch": torch.__version__, "cuda": torch.version.cuda}


def gpus() -> list[dict]:
    """[{"name", "memory_bytes"}] per GPU. nvidia-smi first: asking torch would create a CUDA context in
    the launching process, which holds GPU memory while the torchrun workers train."""
    out = _output(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"])
    if out:
        found = []
        for line in out.splitlines():
            name, _, mib = line.rpartition(",")
            if name.strip():
                found.append({"name": name.strip(), "memory_bytes": (_int(mib) or 0) * 2**20 or None})
        return found
    try:
        import torch
        if torch.cuda.is_available():
            return [{"name": p.name, "memory_bytes": p.total_memory}
                    for p in map(torch.cuda.get_device_properties, range(torch.cuda.device_count()))]
        if torch.backends.mps.is_available():
            return [{"name": f"Apple GPU ({platform.machine()}, shares the system RAM)", "memory_bytes": None}]
    except Exception:  # a broken driver must not stop a run from starting
        pass
    return []


def git_state(root: Path = SOURCE_ROOT) -> dict | None:
    """{"commit", "branch", "dirty", "subject"} of the checkout nanochat runs from; None outside git."""
    commit = _output(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    if not commit:
        return None
    status = _output(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], allow_empty=True)
    return {"commit": commit,
            "branch": _output(["git", "-C", str(root), "rev-parse", "--abbrev-ref", "HEAD"]),
            "dirty": bool(status),
            "subject": (_output(["git", "-C", str(root), "log", "-1", "--format=%s"]) or "")[:80].strip()}


def codebase_size(root: Path = SOURCE_ROOT) -> dict | None:
    """Characters, lines, files and ~tokens (characters / 4) of the source, and the runtime dependencies."""
    files = _code_files(root)
    chars = lines = 0
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        chars += len(text)
        lines += text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    return {"files": len(files), "chars": chars, "lines": lines, "tokens": chars // 4,
            "dependencies": dependencies()}


def _code_files(root: Path) -> list[Path]:
    if (root / "pyproject.toml").exists():  # a source checkout: git knows what belongs to it
        listed = _output(["git", "-C", str(root), "ls-files"])
        if listed:
            return [root / p for p in listed.splitlines() if p.endswith(CODE_SUFFIXES) and (root / p).is_file()]
        tops = [root]
    else:  # an installed package: the core and the first-party plugins
        tops = [root / "nanochat"] + sorted(root.glob("nanochat_*"))
    found = []
    for top in tops:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
            found += [Path(dirpath) / f for f in filenames if f.endswith(CODE_SUFFIXES)]
    return sorted(found)


def dependencies(root: Path = SOURCE_ROOT) -> list[str]:
    """Names of nanochat's runtime dependencies (extras left out): from pyproject.toml in a source
    checkout (the installed metadata may predate an edit), else from the installed metadata."""
    try:
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        requires = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    except (OSError, KeyError, ValueError, ImportError):
        try:
            requires = [r for r in metadata.requires("nanochat") or [] if "extra ==" not in r]
        except metadata.PackageNotFoundError:
            return []
    names = []
    for req in requires:
        name = req.split(";")[0].strip()
        for sep in "<>=!~[ (":
            name = name.split(sep)[0]
        names.append(name)
    return names


def _output(cmd: list[str], allow_empty: bool = False) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    text = out.stdout.strip()
    return text if text or allow_empty else None


def _int(text) -> int | None:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None
