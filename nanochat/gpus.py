"""Named GPUs for planning a run you have not rented yet: dense bf16 (and fp8) peak FLOP/s, memory, and what
a node costs. The cuda backend reads the same peaks for MFU, so a plan and a run divide by the same number.
"""

# (name fragment, dense bf16 tensor-core peak FLOP/s, memory bytes), most specific fragment first.
GPU_SPECS = [
    ("H100 NVL", 835e12, 94e9), ("H100 PCIe", 756e12, 80e9), ("H100", 989e12, 80e9), ("H200", 989e12, 141e9),
    ("H800", 989e12, 80e9), ("GH200", 989e12, 96e9), ("B200", 2.25e15, 180e9), ("B100", 1.75e15, 180e9),
    ("A100", 312e12, 80e9), ("A800", 312e12, 80e9), ("L40S", 362e12, 48e9), ("L40", 181e12, 48e9),
    ("L4", 121e12, 24e9), ("A10G", 125e12, 24e9), ("A10", 125e12, 24e9), ("A6000", 155e12, 48e9),
    ("RTX 6000 Ada", 364e12, 48e9), ("4090", 165e12, 24e9), ("3090", 71e12, 24e9), ("V100", 125e12, 32e9),
    ("T4", 65e12, 16e9),
]

# GPUs with fp8 tensor cores (compute capability 8.9+: Ada, Hopper, Blackwell). Their dense fp8 peak is
# twice their dense bf16 peak on every datasheet of these generations, so the table keeps one column.
FP8_GPUS = {"H100 NVL", "H100 PCIe", "H100", "H200", "H800", "GH200", "B200", "B100", "L40S", "L40", "L4",
            "RTX 6000 Ada", "4090"}

# The MFU a plan assumes for bf16 training on these GPUs: the seed's d32 measured ~51% on H100, the
# record's d24 runs ~45% (with fp8 on top); 45% is a fair middle for a time and cost estimate.
PLANNING_MFU = 0.45

# The same for fp8 training, against the fp8 peak. An fp8 run is not twice as fast: attention, lm_head, the
# optimizer and every elementwise op stay in bf16. The record's d26 measured fp8 at +17% tokens/s over bf16,
# so a plan assumes 1.17x the bf16 throughput: 0.45 x 1.17 / 2 = 26% of the fp8 peak.
PLANNING_MFU_FP8 = 0.26

# On-demand price of one 8xH100 node, dollars per hour: the seed's figure ($24/h; its 3h51m d20 speedrun
# is "~$100"). The one place this number lives; prices move, so the plan always prints it beside the cost.
NODE_8XH100_DOLLARS_PER_HOUR = 24.0


def spec(name: str):
    """(name as listed, peak FLOP/s, memory bytes) of a GPU named by a fragment of its name, case-insensitive."""
    for fragment, peak, memory in GPU_SPECS:
        if fragment.lower() in name.lower():
            return fragment, peak, memory
    return None


def fp8_peak(name: str) -> float | None:
    """Dense fp8 peak FLOP/s of a GPU named by a fragment of its name; None where it has no fp8 tensor cores."""
    found = spec(name)
    if found is None or found[0] not in FP8_GPUS:
        return None
    return 2 * found[1]


# GPUs with tf32 tensor cores (compute capability 8.0+). Their dense tf32 peak is half their dense bf16 peak on
# every datasheet of these generations; Volta and Turing (V100, T4) have none.
NO_TF32 = {"V100", "T4"}


def tf32_peak(name: str) -> float | None:
    """Dense tf32 peak FLOP/s (fp32 matmuls on tensor cores) of a GPU named by a fragment of its name."""
    found = spec(name)
    if found is None or found[0] in NO_TF32:
        return None
    return found[1] / 2


def names() -> list[str]:
    return [fragment for fragment, _, _ in GPU_SPECS]
