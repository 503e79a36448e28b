"""Device backends: cpu, cuda, mps.

Each backend answers the questions every stage asks of a device: is it here, which torch device
for this local rank, which compute dtype, which torch.distributed backend, how to synchronize,
how much memory, what peak FLOP/s to use for MFU, and whether torch.compile pays off.
torch is imported inside the methods so listing plugins stays fast.
"""
import os
import platform
import resource
import shutil
import sys

from nanochat import hookimpl
from nanochat.backend import bf16_speedup, cpu_name, matmul_peak
from nanochat.gpus import GPU_SPECS, fp8_peak

# Dense bf16 tensor-core peaks (FLOP/s) by GPU name fragment, most specific first: the core's table,
# shared with the run planner (nanochat/plan.py) so plan and MFU use the same peak.
GPU_BF16_PEAK = [(fragment, peak) for fragment, peak, _ in GPU_SPECS]


def _peak_override():
    value = os.environ.get("NANOCHAT_PEAK_FLOPS")
    return float(value) if value else None


class CPUBackend:
    name = "cpu"
    priority = 10
    dist_backend = "gloo"

    def is_available(self):
        return True

    def device(self, local_rank=0):
        import torch
        return torch.device("cpu")

    def has_native_bf16(self):
        """Hardware bf16 matmul support (AVX512-BF16 / AMX on x86, FEAT_BF16 on Arm)."""
        try:
            flags = open("/proc/cpuinfo").read()
            return any(f in flags for f in (" avx512_bf16", " amx_bf16", " bf16"))
        except OSError:
            pass
        if sys.platform == "darwin" and platform.machine() == "arm64":
            return os.popen("sysctl -n hw.optional.arm.FEAT_BF16 2>/dev/null").read().strip() == "1"
        return False

    def compute_dtype(self):
        """bf16 only where the CPU has it natively and it measures faster than fp32."""
        import torch
        forced = os.environ.get("NANOCHAT_DTYPE")
        if forced:
            return getattr(torch, {"bf16": "bfloat16", "fp32": "float32"}.get(forced, forced))
        if not self.has_native_bf16():
            return torch.float32
        return torch.bfloat16 if bf16_speedup("cpu") > 1.2 else torch.float32

    def synchronize(self):
        pass

    def memory(self):
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
        return {"peak_bytes": peak_kib * scale, "total_bytes": total}

    def peak_flops(self, dtype):
        return _peak_override() or matmul_peak("cpu", dtype)

    def compile_is_wise(self):
        # Inductor on CPU needs a C++ compiler; with one it is a clear win for training steps.
        return sys.platform != "win32" and any(shutil.which(c) for c in ("g++", "c++", "clang++"))

    def describe(self):
        return {"device_name": cpu_name(), "cpu_count": os.cpu_count(), "native_bf16": self.has_native_bf16()}


class CUDABackend:
    name = "cuda"
    priority = 30
    dist_backend = "nccl"

    def is_available(self):
        import torch
        return torch.cuda.is_available()

    def device(self, local_rank=0):
        import torch
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)

    def compute_dtype(self):
        import torch
        forced = os.environ.get("NANOCHAT_DTYPE")
        if forced:
            return getattr(torch, {"bf16": "bfloat16", "fp32": "float32"}.get(forced, forced))
        major, _ = torch.cuda.get_device_capability()
        return torch.bfloat16 if major >= 8 else torch.float32

    def synchronize(self):
        import torch
        torch.cuda.synchronize()

    def memory(self):
        import torch
        free, total = torch.cuda.mem_get_info()
        return {"allocated_bytes": torch.cuda.memory_allocated(), "peak_bytes": torch.cuda.max_memory_allocated(),
                "free_bytes": free, "total_bytes": total}

    def peak_flops(self, dtype):
        import torch
        override = _peak_override()
        if override:
            return override
        name = torch.cuda.get_device_name()
        if dtype in (torch.float8_e4m3fn, torch.float8_e5m2):  # fp8 training (nanochat/fp8.py)
            return fp8_peak(name)  # None (no MFU) for a GPU not in the table: there is no fp8 matmul to time
        for fragment, peak in GPU_BF16_PEAK:
            if fragment in name:
                return peak if dtype == torch.bfloat16 else peak / 2  # tf32 runs at half the bf16 rate
        return matmul_peak("cuda", dtype, size=4096)

    def compile_is_wise(self):
        return sys.platform == "linux"

    def describe(self):
        import torch
        n = torch.cuda.device_count()
        return {"device_name": torch.cuda.get_device_name(), "gpus": n,
                "gpu_names": [torch.cuda.get_device_name(i) for i in range(n)],
                "capability": ".".join(map(str, torch.cuda.get_device_capability())),
                "cuda": torch.version.cuda}


class MPSBackend:
    name = "mps"
    priority = 20
    dist_backend = "gloo"

    def is_available(self):
        import torch
        return torch.backends.mps.is_available()

    def device(self, local_rank=0):
        import torch
        return torch.device("mps")

    def compute_dtype(self):
        import torch
        return torch.float32  # bf16 on MPS is slower or unsupported on many chips and torch versions

    def synchronize(self):
        import torch
        torch.mps.synchronize()

    def memory(self):
        import torch
        return {"allocated_bytes": torch.mps.current_allocated_memory(),
                "driver_bytes": torch.mps.driver_allocated_memory()}

    def peak_flops(self, dtype):
        return _peak_override() or matmul_peak("mps", dtype, size=2048)

    def compile_is_wise(self):
        return False

    def describe(self):
        return {"device_name": "Apple GPU (" + platform.machine() + ")"}


@hookimpl
def nanochat_backend(register):
    register(CPUBackend())
    register(CUDABackend())
    register(MPSBackend())
