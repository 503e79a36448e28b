"""Choosing a device backend, and measuring what a device can do.

Backends are plugins (cpu, cuda, mps, ...). `select()` honours an explicit name and otherwise picks the
available backend with the highest priority. `matmul_peak()` times large matmuls so MFU has a
denominator on devices without a published peak (CPUs, Apple GPUs), and `bf16_speedup()` times the
two dtypes in turn for the CPU's choice of compute dtype; results are cached per machine.
"""
import json
import math
import platform
import time

from nanochat import paths
from nanochat.atomic import atomic_write_json
from nanochat.plugins import PluginError, registry


def select(name: str | None = None, reg=None):
    """The backend called `name`, or the best available one when name is None/"auto"."""
    reg = reg or registry()
    if name and name != "auto":
        backend = reg.get("backend", name)
        if not backend.is_available():
            raise PluginError(f"device backend {name!r} is not available on this machine; "
                              f"available: {', '.join(available_names(reg)) or 'none'}")
        return backend
    candidates = [b for b in reg.all("backend") if b.is_available()]
    if not candidates:
        raise PluginError("no device backend is available; is the nanochat_backends plugin installed?")
    return max(candidates, key=lambda b: b.priority)


def available_names(reg=None) -> list[str]:
    reg = reg or registry()
    return [b.name for b in reg.all("backend") if b.is_available()]


def _probe_cache_path():
    return paths.cache_dir() / "matmul-peak.json"


def _cached(name, device, dtype, size, measure):
    """measure() once per (what, device, dtype, machine, torch version, threads, size), kept in the
    per-machine cache file: a probe costs about a second."""
    import torch

    key = "|".join(([name] if name else []) + [str(device), str(dtype), platform.machine(), cpu_name(),
                                               torch.__version__, str(torch.get_num_threads()), str(size)])
    cache_file = _probe_cache_path()
    cache = {}
    if cache_file.exists():
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cache = {}  # a damaged cache is only a cache: re-measure
        if key in cache:
            return float(cache[key])
    cache[key] = value = measure()
    atomic_write_json(cache_file, cache)
    return value


def _burst(a, b, sync, reps=4):
    """Seconds per matmul of a burst of `reps`."""
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return (time.perf_counter() - t0) / reps


def _operands(device, dtype, size):
    import torch
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):  # warm up kernels and caches
        a @ b
    return a, b


def matmul_peak(device, dtype, *, size: int = 1024, seconds: float = 0.3, use_cache: bool = True) -> float:
    """Measured FLOP/s of a square matmul on `device` in `dtype` (best of a few timed bursts).

    Cached by (device, dtype, machine, torch version, threads) because a probe costs ~1 s per dtype.
    """
    def measure():
        a, b = _operands(device, dtype, size)
        sync = _sync_for(device)
        sync()
        best, deadline = math.inf, time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            best = min(best, _burst(a, b, sync))
        return 2 * size**3 / best
    return _cached(None, device, dtype, size, measure) if use_cache else measure()


def bf16_speedup(device, *, size: int = 1024, rounds: int = 8, use_cache: bool = True) -> float:
    """How many times faster a bf16 matmul runs than an fp32 one on `device`: bursts of the two taken
    in turn, best of each. Timed in alternation, other work on the machine slows both alike, so the
    compute dtype chosen from it does not follow the load (two separate probes did: a busy minute
    during the fp32 one picked fp32 on a machine where bf16 is twice as fast)."""
    import torch

    def measure():
        fp32, bf16 = _operands(device, torch.float32, size), _operands(device, torch.bfloat16, size)
        sync = _sync_for(device)
        sync()
        best = {torch.float32: math.inf, torch.bfloat16: math.inf}
        for _ in range(rounds):
            for dtype, (a, b) in ((torch.float32, fp32), (torch.bfloat16, bf16)):
                best[dtype] = min(best[dtype], _burst(a, b, sync))
        return best[torch.float32] / best[torch.bfloat16]
    return _cached("bf16-speedup", device, torch.bfloat16, size, measure) if use_cache else measure()


def _sync_for(device):
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.synchronize
    if kind == "mps":
        return torch.mps.synchronize
    return lambda: None


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(backend) -> dict:
    """What `nanochat env` prints: the chosen backend and what it can do."""
    import torch

    dtype = backend.compute_dtype()
    info = {
        "backend": backend.name,
        "available_backends": available_names(),
        "compute_dtype": str(dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "dist_backend": backend.dist_backend,
        "compile_is_wise": backend.compile_is_wise(),
        "peak_flops": backend.peak_flops(dtype),
    }
    info.update(backend.describe())
    return info
