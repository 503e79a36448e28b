"""Choosing a device backend, and measuring what a device can do.

Backends are plugins (cpu, cuda, mps, ...). `select()` honours an explicit name and otherwise picks the
available backend with the highest priority. `matmul_peak()` times large matmuls so MFU has a
denominator on devices without a published peak (CPUs, Apple GPUs); results are cached per machine.
"""
import json
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


def matmul_peak(device, dtype, *, size: int = 1024, seconds: float = 0.3, use_cache: bool = True) -> float:
    """Measured FLOP/s of a square matmul on `device` in `dtype` (best of a few timed bursts).

    Cached by (device, dtype, machine, torch version, threads) because a probe costs ~1 s per dtype.
    """
    import torch

    key = "|".join([str(device), str(dtype), platform.machine(), cpu_name(),
                    torch.__version__, str(torch.get_num_threads()), str(size)])
    cache_file = _probe_cache_path()
    cache = {}
    if use_cache and cache_file.exists():
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cache = {}  # a damaged cache is only a cache: re-measure
        if key in cache:
            return float(cache[key])
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = _sync_for(device)
    for _ in range(2):  # warm up kernels and caches
        a @ b
    sync()
    best, deadline = 0.0, time.perf_counter() + seconds
    reps = 4
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync()
        dt = time.perf_counter() - t0
        best = max(best, 2 * size**3 * reps / dt)
    if use_cache:
        cache[key] = best
        atomic_write_json(cache_file, cache)
    return best


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
